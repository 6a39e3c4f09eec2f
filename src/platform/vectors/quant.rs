//! The int8 copy of the index's vectors: each vector is scaled by its own
//! largest magnitude onto -127..=127 (symmetric, no offset, so a dot
//! product of codes times the two scales estimates the float dot product).
//! A quarter of the bytes of the floats, so a scan reads a quarter of the
//! memory; the best candidates are then re-scored exactly in f32, so the
//! scores a search returns are never the estimates.

/// Codes and scales, one row per index row (tombstoned rows included).
#[derive(Debug, Clone)]
pub(super) struct Quantized {
    dimensions: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

/// Writes `vector`'s codes into `codes` and returns the scale: element
/// `i` is about `codes[i] as f32 * scale`. A zero vector has scale 0.
pub(super) fn quantize(vector: &[f32], codes: &mut [i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { quantize_avx2(vector, codes) };
    }
    quantize_portable(vector, codes)
}

/// The portable loops compiled for AVX2: 4x faster, which is most of the
/// time spent making the int8 copy at load.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn quantize_avx2(vector: &[f32], codes: &mut [i8]) -> f32 {
    quantize_portable(vector, codes)
}

/// Written for the vectoriser: eight running maxima, and a rounding that
/// is an add and a truncating conversion.
#[inline(always)]
fn quantize_portable(vector: &[f32], codes: &mut [i8]) -> f32 {
    let mut lanes = [0.0_f32; 8];
    let chunks = vector.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            let magnitude = x.abs();
            *lane = if magnitude > *lane { magnitude } else { *lane };
        }
    }
    let largest = lanes
        .iter()
        .chain(rest)
        .fold(0.0_f32, |m, x| if x.abs() > m { x.abs() } else { m });
    if largest == 0.0 || !largest.is_finite() {
        codes.iter_mut().for_each(|c| *c = 0);
        return 0.0;
    }
    let inverse = 127.0 / largest;
    for (code, &x) in codes.iter_mut().zip(vector) {
        // Round half away from zero; `as` truncates (and saturates),
        // through i32: a saturating float-to-i8 cast does not vectorise.
        let scaled = x * inverse;
        let rounded = (scaled + 0.5_f32.copysign(scaled)) as i32;
        *code = rounded.clamp(-127, 127) as i8;
    }
    largest / 127.0
}

impl Quantized {
    /// Codes for every row of `vectors` (rows of `dimensions` floats).
    pub(super) fn from_rows(vectors: &[f32], dimensions: usize) -> Self {
        let rows = vectors.len().checked_div(dimensions).unwrap_or(0);
        let mut quantized = Quantized {
            dimensions,
            codes: vec![0; rows * dimensions],
            scales: Vec::with_capacity(rows),
        };
        for (vector, codes) in vectors
            .chunks_exact(dimensions.max(1))
            .zip(quantized.codes.chunks_exact_mut(dimensions.max(1)))
        {
            quantized.scales.push(quantize(vector, codes));
        }
        quantized
    }

    pub(super) fn push(&mut self, vector: &[f32]) {
        let start = self.codes.len();
        self.codes.resize(start + self.dimensions, 0);
        let scale = quantize(vector, &mut self.codes[start..]);
        self.scales.push(scale);
    }

    pub(super) fn set(&mut self, row: usize, vector: &[f32]) {
        let codes = &mut self.codes[row * self.dimensions..][..self.dimensions];
        self.scales[row] = quantize(vector, codes);
    }

    /// Keeps the rows whose `keep` entry is true, in order.
    pub(super) fn retain(&mut self, keep: &[bool]) {
        let dims = self.dimensions;
        let mut to = 0;
        for (from, &kept) in keep.iter().enumerate() {
            if kept {
                if to != from {
                    self.codes
                        .copy_within(from * dims..(from + 1) * dims, to * dims);
                    self.scales[to] = self.scales[from];
                }
                to += 1;
            }
        }
        self.codes.truncate(to * dims);
        self.scales.truncate(to);
    }

    /// All codes, row after row.
    pub(super) fn codes(&self) -> &[i8] {
        &self.codes
    }

    pub(super) fn row(&self, row: usize) -> &[i8] {
        &self.codes[row * self.dimensions..][..self.dimensions]
    }

    pub(super) fn scale(&self, row: usize) -> f32 {
        self.scales[row]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_times_the_scale_give_back_the_vector() {
        let vector: Vec<f32> = (0..100).map(|i| ((i as f32) * 0.7).sin() * 0.3).collect();
        let mut codes = vec![0; 100];
        let scale = quantize(&vector, &mut codes);
        assert!(codes.iter().any(|&c| c == 127 || c == -127));
        for (code, x) in codes.iter().zip(&vector) {
            assert!((f32::from(*code) * scale - x).abs() <= scale / 2.0 + 1e-6);
        }
        assert_eq!(quantize(&[0.0; 4], &mut codes[..4]), 0.0);
        assert_eq!(&codes[..4], &[0, 0, 0, 0]);
    }

    #[test]
    fn rows_are_kept_in_order() {
        let vectors: Vec<f32> = (0..12).map(|i| i as f32 - 6.0).collect();
        let mut quantized = Quantized::from_rows(&vectors, 3);
        let last = quantized.row(3).to_vec();
        quantized.retain(&[true, false, false, true]);
        assert_eq!(quantized.codes().len(), 6);
        assert_eq!(quantized.row(1), &last[..]);
        quantized.push(&[1.0, 0.0, -1.0]);
        assert_eq!(quantized.row(2), &[127, 0, -127]);
        quantized.set(0, &[0.0, 2.0, 0.0]);
        assert_eq!(quantized.row(0), &[0, 127, 0]);
        assert!((quantized.scale(0) - 2.0 / 127.0).abs() < 1e-7);
    }
}
