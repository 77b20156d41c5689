//! CRC-32 with the 0x04C11DB7 polynomial, most significant bit first, no
//! reflection and no final XOR: the checksum of MPEG-TS PSI sections
//! (CRC-32/MPEG-2, started at all ones) and of Ogg pages (started at zero).

const POLY: u32 = 0x04c1_1db7;

/// The CRC of `data` from the register value `init`.
pub fn crc32_msb_first(init: u32, data: &[u8]) -> u32 {
    let mut crc = init;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ POLY
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// CRC-32/MPEG-2, of a PSI section.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    crc32_msb_first(0xffff_ffff, data)
}

/// The Ogg page checksum (RFC 3533), computed with its CRC field zeroed.
pub fn crc32_ogg(data: &[u8]) -> u32 {
    crc32_msb_first(0, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values() {
        // The catalogue's check values for "123456789".
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
        // CRC-32/CKSUM is the Ogg one with a final XOR of all ones.
        assert_eq!(crc32_ogg(b"123456789") ^ 0xffff_ffff, 0x765e_7680);
        assert_eq!(crc32_ogg(b""), 0);
        assert_eq!(crc32_mpeg2(b""), 0xffff_ffff);
    }
}
