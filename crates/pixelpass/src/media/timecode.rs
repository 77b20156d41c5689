//! The time code every frame of `--source clock` carries, drawn so that any
//! tool can read it back after lossy compression (issue 5 fixes the layout):
//!
//! - the wall-clock time the frame was produced, in **milliseconds since the
//!   Unix epoch**, as a **48-bit unsigned integer, most significant bit first**;
//! - **48 squares of 20×20 pixels in one row from pixel (0,0)**: white
//!   (luma ≥ 200; we draw 235) for 1, black (luma ≤ 50; we draw 16) for 0;
//! - **the same row again right below it** (y 20..40) for redundancy.
//!
//! The reader looks only at the middle 12×12 pixels of each square (H.264
//! and JPEG smear edges, not centres), classifies each square by the mean
//! luma there, and combines the two rows: a bit is read when at least one row
//! is clear and the other does not contradict it.
//!
//! Pure: planes are byte slices with a stride, so the same code serves the
//! GStreamer source (I420 Y plane), the decoders in `bench latency` and the
//! unit tests. The browser's copy of the reader (crates/pixelpass-testkit/browser/latency.mjs)
//! uses the same thresholds.

use std::fmt;

/// Bits in the code.
pub const BITS: usize = 48;
/// Side of one square, pixels.
pub const SQUARE: usize = 20;
/// Rows of squares (the second is a copy of the first).
pub const ROWS: usize = 2;
/// The area the code covers from (0,0): 960×40 pixels.
pub const WIDTH: usize = BITS * SQUARE;
pub const HEIGHT: usize = ROWS * SQUARE;
/// Largest value the code holds (2^48 − 1 ms: the year 10889).
pub const MAX: u64 = (1 << BITS) - 1;

/// Luma drawn for a 1 and a 0 (video range: 235 is white, 16 black).
pub const WHITE: u8 = 235;
pub const BLACK: u8 = 16;
/// Chroma drawn under the squares (no colour: 128).
pub const NEUTRAL_CHROMA: u8 = 128;

/// Pixels skipped at each edge of a square when reading.
pub const READ_INSET: usize = 4;
/// A square whose mean is at least this is a clear 1 …
pub const ONE_AT_LEAST: f32 = 160.0;
/// … at most this a clear 0; between the two it is unclear.
pub const ZERO_AT_MOST: f32 = 96.0;

/// A plane too small for the code, or a value too large for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeError {
    TooSmall { width: usize, height: usize },
    ShortPlane { len: usize, needed: usize },
    TooLarge(u64),
}

impl fmt::Display for CodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeError::TooSmall { width, height } => {
                write!(f, "a {width}×{height} picture cannot hold the time code ({WIDTH}×{HEIGHT} pixels)")
            }
            CodeError::ShortPlane { len, needed } => {
                write!(f, "the plane has {len} bytes, the code needs {needed}")
            }
            CodeError::TooLarge(v) => write!(f, "{v} does not fit in {BITS} bits"),
        }
    }
}

impl std::error::Error for CodeError {}

/// Why a frame's code could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadError {
    Code(CodeError),
    /// Both rows unclear for this bit (square means in the two rows).
    Unclear {
        bit: usize,
        means: [f32; 2],
    },
    /// One row says 1, the other 0.
    Conflict {
        bit: usize,
        means: [f32; 2],
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Code(e) => e.fmt(f),
            ReadError::Unclear { bit, means } => {
                write!(
                    f,
                    "bit {bit} is unclear in both rows (mean luma {:.0} and {:.0})",
                    means[0], means[1]
                )
            }
            ReadError::Conflict { bit, means } => {
                write!(
                    f,
                    "bit {bit}: the rows disagree (mean luma {:.0} and {:.0})",
                    means[0], means[1]
                )
            }
        }
    }
}

impl std::error::Error for ReadError {}

/// Bytes a plane of `stride` needs to hold the code's rows.
fn needed(stride: usize, rows: usize, row_bytes: usize) -> usize {
    (rows - 1) * stride + row_bytes
}

fn check(len: usize, stride: usize, width: usize, height: usize) -> Result<(), CodeError> {
    if width < WIDTH || height < HEIGHT || stride < WIDTH {
        return Err(CodeError::TooSmall { width, height });
    }
    let need = needed(stride, HEIGHT, WIDTH);
    if len < need {
        return Err(CodeError::ShortPlane { len, needed: need });
    }
    Ok(())
}

/// Value of bit `i` (0 = most significant) of `ms`.
fn bit(ms: u64, i: usize) -> bool {
    (ms >> (BITS - 1 - i)) & 1 == 1
}

/// Draw `ms` into a luma plane of `width`×`height` with `stride` bytes per row.
pub fn render(
    plane: &mut [u8],
    stride: usize,
    width: usize,
    height: usize,
    ms: u64,
) -> Result<(), CodeError> {
    if ms > MAX {
        return Err(CodeError::TooLarge(ms));
    }
    check(plane.len(), stride, width, height)?;
    for y in 0..HEIGHT {
        let row = &mut plane[y * stride..y * stride + WIDTH];
        for (i, square) in row.chunks_exact_mut(SQUARE).enumerate() {
            square.fill(if bit(ms, i) { WHITE } else { BLACK });
        }
    }
    Ok(())
}

/// Neutral chroma under the code in a plane subsampled by `sub_x`×`sub_y`
/// (2×2 for I420's U and V planes).
pub fn neutral_chroma(
    plane: &mut [u8],
    stride: usize,
    sub_x: usize,
    sub_y: usize,
) -> Result<(), CodeError> {
    let (w, h) = (WIDTH.div_ceil(sub_x.max(1)), HEIGHT.div_ceil(sub_y.max(1)));
    if stride < w {
        return Err(CodeError::TooSmall {
            width: stride,
            height: h,
        });
    }
    let need = needed(stride, h, w);
    if plane.len() < need {
        return Err(CodeError::ShortPlane {
            len: plane.len(),
            needed: need,
        });
    }
    for y in 0..h {
        plane[y * stride..y * stride + w].fill(NEUTRAL_CHROMA);
    }
    Ok(())
}

/// Mean luma of the middle of square `i` in `row`.
fn square_mean(plane: &[u8], stride: usize, row: usize, i: usize) -> f32 {
    let (x0, y0) = (i * SQUARE + READ_INSET, row * SQUARE + READ_INSET);
    let side = SQUARE - 2 * READ_INSET;
    let mut sum = 0u32;
    for y in y0..y0 + side {
        sum += plane[y * stride + x0..y * stride + x0 + side]
            .iter()
            .map(|&v| u32::from(v))
            .sum::<u32>();
    }
    sum as f32 / (side * side) as f32
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Square {
    One,
    Zero,
    Unclear,
}

fn classify(mean: f32) -> Square {
    if mean >= ONE_AT_LEAST {
        Square::One
    } else if mean <= ZERO_AT_MOST {
        Square::Zero
    } else {
        Square::Unclear
    }
}

/// Combine the two rows' verdicts on one bit.
fn combine(bit: usize, means: [f32; 2]) -> Result<bool, ReadError> {
    match (classify(means[0]), classify(means[1])) {
        (Square::One, Square::One | Square::Unclear) | (Square::Unclear, Square::One) => Ok(true),
        (Square::Zero, Square::Zero | Square::Unclear) | (Square::Unclear, Square::Zero) => {
            Ok(false)
        }
        (Square::Unclear, Square::Unclear) => Err(ReadError::Unclear { bit, means }),
        _ => Err(ReadError::Conflict { bit, means }),
    }
}

/// Read the time code from a luma plane (any range: video 16–235 or full 0–255).
pub fn read(plane: &[u8], stride: usize, width: usize, height: usize) -> Result<u64, ReadError> {
    check(plane.len(), stride, width, height).map_err(ReadError::Code)?;
    let mut v = 0u64;
    for i in 0..BITS {
        let means = [
            square_mean(plane, stride, 0, i),
            square_mean(plane, stride, 1, i),
        ];
        v = (v << 1) | u64::from(combine(i, means)?);
    }
    Ok(v)
}

/// Milliseconds since the Unix epoch now (what the clock source draws).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 1280;
    const H: usize = 720;

    /// A busy background: a diagonal gradient with some noise.
    fn background(stride: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..stride * H)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let (x, y) = (i % stride, i / stride);
                ((x + y + seed as usize * 3) % 256) as u8 ^ (state as u8 & 0x1f)
            })
            .collect()
    }

    fn times() -> Vec<u64> {
        vec![
            0,
            1,
            (1 << 47) - 1,
            1 << 47,
            MAX - 1,
            MAX,
            0x5555_5555_5555,
            0xaaaa_aaaa_aaaa,
            now_ms(),
        ]
    }

    #[test]
    fn round_trips_for_edge_values_and_now() {
        for (n, ms) in times().into_iter().enumerate() {
            let stride = W + 32 * (n % 2); // padded rows too
            let mut y = background(stride, n as u64);
            render(&mut y, stride, W, H, ms).unwrap();
            assert_eq!(read(&y, stride, W, H), Ok(ms), "{ms:#x}");
        }
    }

    #[test]
    fn the_layout_is_the_one_the_issue_fixes() {
        let mut y = vec![128u8; W * H];
        // 0b1000…01: the first and last squares white, the rest black.
        render(&mut y, W, W, H, (1 << 47) | 1).unwrap();
        let px = |x: usize, yy: usize| y[yy * W + x];
        for row in [0, 19, 20, 39] {
            assert_eq!(px(0, row), WHITE);
            assert_eq!(px(19, row), WHITE);
            assert_eq!(px(20, row), BLACK);
            assert_eq!(px(939, row), BLACK);
            assert_eq!(px(940, row), WHITE);
            assert_eq!(px(959, row), WHITE);
        }
        assert_eq!(px(960, 0), 128, "nothing drawn right of the code");
        assert_eq!(px(0, 40), 128, "nothing drawn below the second row");
        const { assert!(WHITE >= 200 && BLACK <= 50) };
    }

    #[test]
    fn full_range_and_inverted_noise_still_read() {
        let ms = now_ms();
        let mut y = background(W, 7);
        render(&mut y, W, W, H, ms).unwrap();
        // What a full-range conversion (ffmpeg -pix_fmt gray, a browser canvas) does.
        for v in &mut y {
            *v = ((f32::from(*v) - 16.0) * 255.0 / 219.0).clamp(0.0, 255.0) as u8;
        }
        assert_eq!(read(&y, W, W, H), Ok(ms));
    }

    /// A JPEG-like degradation without a codec: 3×3 box blur, then ±40 noise.
    #[test]
    fn survives_blur_and_noise() {
        let ms = now_ms();
        let mut y = background(W, 3);
        render(&mut y, W, W, H, ms).unwrap();
        let src = y.clone();
        for yy in 1..HEIGHT + 1 {
            for x in 1..WIDTH + 1 {
                let mut s = 0u32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        s += u32::from(src[(yy + dy - 1) * W + x + dx - 1]);
                    }
                }
                y[yy * W + x] = (s / 9) as u8;
            }
        }
        let mut state = 99u32;
        for v in y.iter_mut().take(HEIGHT * W) {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let noise = (state >> 16) as i32 % 81 - 40;
            *v = (i32::from(*v) + noise).clamp(0, 255) as u8;
        }
        assert_eq!(read(&y, W, W, H), Ok(ms));
    }

    #[test]
    fn one_damaged_row_is_covered_by_the_other() {
        let ms = 0xabcd_ef01_2345;
        let mut y = vec![0u8; W * H];
        render(&mut y, W, W, H, ms).unwrap();
        // Row 1 washed out to grey: row 2 alone decides.
        for v in &mut y[..SQUARE * W] {
            *v = 128;
        }
        assert_eq!(read(&y, W, W, H), Ok(ms));
    }

    #[test]
    fn unreadable_codes_are_errors_not_wrong_numbers() {
        let mut y = vec![128u8; W * H];
        assert!(matches!(
            read(&y, W, W, H),
            Err(ReadError::Unclear { bit: 0, .. })
        ));
        render(&mut y, W, W, H, MAX).unwrap();
        // Bit 5 black in the second row only: the rows contradict each other.
        for yy in SQUARE..HEIGHT {
            y[yy * W + 5 * SQUARE..yy * W + 6 * SQUARE].fill(BLACK);
        }
        assert!(matches!(
            read(&y, W, W, H),
            Err(ReadError::Conflict { bit: 5, .. })
        ));
    }

    #[test]
    fn refuses_small_planes_and_large_values() {
        let mut y = vec![0u8; 640 * 360];
        assert_eq!(
            render(&mut y, 640, 640, 360, 1),
            Err(CodeError::TooSmall {
                width: 640,
                height: 360
            })
        );
        let mut y = vec![0u8; W * H];
        assert_eq!(
            render(&mut y, W, W, H, MAX + 1),
            Err(CodeError::TooLarge(MAX + 1))
        );
        assert!(matches!(
            read(&y[..W * 10], W, W, H),
            Err(ReadError::Code(CodeError::ShortPlane { .. }))
        ));
    }

    #[test]
    fn chroma_under_the_code_is_neutral() {
        let stride = W / 2;
        let mut u = vec![200u8; stride * H / 2];
        neutral_chroma(&mut u, stride, 2, 2).unwrap();
        assert_eq!(u[0], NEUTRAL_CHROMA);
        assert_eq!(u[19 * stride + 479], NEUTRAL_CHROMA);
        assert_eq!(u[19 * stride + 480], 200);
        assert_eq!(u[20 * stride], 200);
    }
}
