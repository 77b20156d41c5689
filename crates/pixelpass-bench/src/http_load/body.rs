//! Counting body payload bytes as they stream by, without copying: chunked
//! framing removed, content-length and read-until-close as they are.

use pixelpass_testkit::client::http::raw::Framing;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size.
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last (zero) chunk: trailer lines until a blank one.
    Trailer {
        line_len: usize,
    },
    TrailerLf {
        line_len: usize,
    },
    Done,
}

/// Counts the payload of a chunked body as it streams by, without copying.
#[derive(Debug, Default)]
pub struct ChunkedCounter {
    state: ChunkState,
    size: u64,
    digits: u8,
    /// Payload bytes so far.
    pub payload: u64,
}

impl ChunkedCounter {
    pub fn new() -> Self {
        Self::default()
    }

    #[cfg(test)]
    /// The terminating zero-size chunk (and trailers) went by.
    pub fn finished(&self) -> bool {
        self.state == ChunkState::Done
    }

    pub fn feed(&mut self, mut buf: &[u8]) -> Result<(), String> {
        while !buf.is_empty() {
            if self.state == ChunkState::Data {
                let n = (self.size).min(buf.len() as u64) as usize;
                self.payload += n as u64;
                self.size -= n as u64;
                buf = &buf[n..];
                if self.size == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            let b = buf[0];
            buf = &buf[1..];
            self.state = match (self.state, b) {
                (ChunkState::Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits >= 15 {
                        return Err("chunk size too large".into());
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                    ChunkState::Size
                }
                (ChunkState::Size, b';' | b' ' | b'\t') if self.digits > 0 => ChunkState::Extension,
                (ChunkState::Size, b'\r') if self.digits > 0 => ChunkState::SizeLf,
                (ChunkState::Extension, b'\r') => ChunkState::SizeLf,
                (ChunkState::Extension, _) => ChunkState::Extension,
                (ChunkState::SizeLf, b'\n') if self.size == 0 => {
                    ChunkState::Trailer { line_len: 0 }
                }
                (ChunkState::SizeLf, b'\n') => ChunkState::Data,
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataLf, b'\n') => {
                    self.digits = 0;
                    self.size = 0;
                    ChunkState::Size
                }
                (ChunkState::Trailer { line_len }, b'\r') => ChunkState::TrailerLf { line_len },
                (ChunkState::Trailer { line_len }, _) => ChunkState::Trailer {
                    line_len: line_len + 1,
                },
                (ChunkState::TrailerLf { line_len: 0 }, b'\n') => ChunkState::Done,
                (ChunkState::TrailerLf { .. }, b'\n') => ChunkState::Trailer { line_len: 0 },
                (ChunkState::Done, _) => return Err("bytes after the end of a chunked body".into()),
                (state, b) => {
                    return Err(format!(
                        "bad chunked framing: byte {b:#04x} in state {state:?}"
                    ))
                }
            };
        }
        Ok(())
    }
}

/// Counts body payload bytes for any framing.
#[derive(Debug)]
pub enum BodyCounter {
    Chunked(ChunkedCounter),
    Length { left: u64, payload: u64 },
    Close { payload: u64 },
}

impl BodyCounter {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Chunked => BodyCounter::Chunked(ChunkedCounter::new()),
            Framing::Length(n) => BodyCounter::Length {
                left: n,
                payload: 0,
            },
            Framing::Close => BodyCounter::Close { payload: 0 },
        }
    }

    pub fn feed(&mut self, buf: &[u8]) -> Result<(), String> {
        match self {
            BodyCounter::Chunked(c) => c.feed(buf),
            BodyCounter::Length { left, payload } => {
                let n = (buf.len() as u64).min(*left);
                *left -= n;
                *payload += n;
                if n < buf.len() as u64 {
                    return Err("more bytes than content-length".into());
                }
                Ok(())
            }
            BodyCounter::Close { payload } => {
                *payload += buf.len() as u64;
                Ok(())
            }
        }
    }

    pub fn payload(&self) -> u64 {
        match self {
            BodyCounter::Chunked(c) => c.payload,
            BodyCounter::Length { payload, .. } | BodyCounter::Close { payload } => *payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn chunked_payload_is_counted_in_any_split() {
        let big = vec![0x47u8; 3000];
        let mut body = chunked(&[b"hello", &big, b"\r\n0\r\n"]);
        let want = 5 + 3000 + 5;
        // Split the stream at every possible point: the count must not change.
        for split in 0..body.len() {
            let mut c = ChunkedCounter::new();
            c.feed(&body[..split]).unwrap();
            c.feed(&body[split..]).unwrap();
            assert_eq!(c.payload, want, "split at {split}");
            assert!(!c.finished());
        }
        // Byte by byte, then the last chunk and a trailer.
        body.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
        let mut c = ChunkedCounter::new();
        for b in &body {
            c.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(c.payload, want);
        assert!(c.finished());
        assert!(c.feed(b"x").is_err());
    }

    #[test]
    fn chunk_extensions_and_upper_case_hex() {
        let mut c = ChunkedCounter::new();
        c.feed(b"A;name=value\r\n0123456789\r\n1F\r\n").unwrap();
        c.feed(&[7u8; 31]).unwrap();
        c.feed(b"\r\n").unwrap();
        assert_eq!(c.payload, 10 + 31);
    }

    #[test]
    fn broken_chunked_framing_is_an_error() {
        assert!(ChunkedCounter::new().feed(b"zz\r\n").is_err());
        assert!(
            ChunkedCounter::new().feed(b"\r\n").is_err(),
            "no size digits"
        );
        assert!(
            ChunkedCounter::new().feed(b"2\r\nabX").is_err(),
            "data not followed by CRLF"
        );
        assert!(ChunkedCounter::new().feed(b"2\rX").is_err());
        assert!(
            ChunkedCounter::new().feed(b"ffffffffffffffff\r\n").is_err(),
            "size overflow"
        );
    }

    #[test]
    fn length_and_close_framing() {
        let mut b = BodyCounter::new(Framing::Length(5));
        b.feed(b"abc").unwrap();
        b.feed(b"de").unwrap();
        assert_eq!(b.payload(), 5);
        assert!(b.feed(b"f").is_err());
        let mut b = BodyCounter::new(Framing::Close);
        b.feed(b"abcdef").unwrap();
        assert_eq!(b.payload(), 6);
    }
}
