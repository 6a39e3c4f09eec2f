//! Dot-product kernels for the embedded index, with the instruction set
//! chosen at run time, never by a build flag (CRATES.md trap 8): on x86-64
//! the AVX2 + FMA kernels run when `is_x86_feature_detected!` says the CPU
//! has them (std caches the answer, so the check is one load); everywhere
//! else portable code runs, written so the compiler vectorises it for the
//! baseline (SSE2 on x86-64, NEON on aarch64).
//!
//! Scans take the rows to score as an iterator and hand each score to a
//! callback, so filters stay inside the scan. They score four rows at a
//! time against one query: each query block is loaded once for four rows,
//! and four streams from memory are in flight at once.
//!
//! The int8 kernels expect codes in -127..=127 (what `quant.rs` makes).
//! Both x86 instructions multiply unsigned by signed bytes, so the query's
//! magnitudes are the unsigned side and its signs are moved onto the row's
//! codes. With AVX2, `_mm256_maddubs_epi16` then `_mm256_madd_epi16` (two
//! products of at most 127 × 127 never saturate the 16-bit pair sums);
//! where the CPU has AVX-512 VNNI, one `_mm512_dpbusd_epi32` per 64 bytes
//! does the same, which brings the int8 scan down to the memory's speed
//! (0.59 ms instead of 0.79 ms for 10,000 × 1536 codes here).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether the AVX2 + FMA kernels run on this CPU.
#[inline]
pub(super) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512 VNNI int8 kernels run on this CPU.
#[inline]
pub(super) fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The kernels this CPU runs, for benchmarks and logs.
pub(super) fn kernel_name() -> &'static str {
    if has_avx2() && has_avx512_vnni() {
        "f32 avx2+fma, int8 avx512-vnni"
    } else if has_avx2() {
        "avx2+fma"
    } else if cfg!(target_arch = "aarch64") {
        "portable (neon)"
    } else {
        "portable"
    }
}

/// Dot product of two equally long float slices.
#[inline]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { avx2::dot(a, b) };
    }
    dot_portable(a, b)
}

/// Dot product of two equally long int8 code slices.
#[inline]
pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx512_vnni() {
        // SAFETY: the CPU has AVX-512 F, BW and VNNI, checked just above.
        return unsafe { avx512::dot_i8(a, b) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { avx2::dot_i8(a, b) };
    }
    dot_i8_portable(a, b)
}

/// Scores `query` against each of `rows` of `matrix` (rows of `query.len()`
/// floats) and calls `emit(row, score)`, in the iterator's order.
pub(super) fn scan_f32<R, E>(matrix: &[f32], query: &[f32], rows: R, emit: E)
where
    R: Iterator<Item = usize>,
    E: FnMut(usize, f32),
{
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { avx2::scan_f32(matrix, query, rows, emit) };
    }
    let dims = query.len();
    scan_portable(rows, emit, |row| {
        dot_portable(&matrix[row * dims..][..dims], query)
    });
}

/// Like [`scan_f32`] over int8 codes, emitting integer dot products.
pub(super) fn scan_i8<R, E>(codes: &[i8], query: &[i8], rows: R, emit: E)
where
    R: Iterator<Item = usize>,
    E: FnMut(usize, i32),
{
    #[cfg(target_arch = "x86_64")]
    if has_avx512_vnni() {
        // SAFETY: the CPU has AVX-512 F, BW and VNNI, checked just above.
        return unsafe { avx512::scan_i8(codes, query, rows, emit) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { avx2::scan_i8(codes, query, rows, emit) };
    }
    let dims = query.len();
    scan_portable(rows, emit, |row| {
        dot_i8_portable(&codes[row * dims..][..dims], query)
    });
}

/// One row at a time: the portable kernels gain little from blocking.
fn scan_portable<T, R, E, S>(rows: R, mut emit: E, score: S)
where
    R: Iterator<Item = usize>,
    E: FnMut(usize, T),
    S: Fn(usize) -> T,
{
    for row in rows {
        emit(row, score(row));
    }
}

/// Dot product with eight independent accumulators: a plain
/// `zip().sum()` must add in order (floats are not associative), which
/// keeps the compiler from using SIMD lanes; this form it vectorises.
pub(super) fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; 8];
    let (a8, a_rest) = a.split_at(a.len() - a.len() % 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + rest
}

/// Integer addition is associative, so this sum vectorises as it is.
pub(super) fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    /// Adds the eight lanes of a float vector.
    #[target_feature(enable = "avx2,fma")]
    fn sum_ps(v: __m256) -> f32 {
        let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
        let one = _mm_add_ss(pairs, _mm_shuffle_ps::<0b01>(pairs, pairs));
        _mm_cvtss_f32(one)
    }

    /// Adds the eight lanes of an i32 vector.
    #[target_feature(enable = "avx2")]
    fn sum_epi32(v: __m256i) -> i32 {
        let half = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let pairs = _mm_add_epi32(half, _mm_unpackhi_epi64(half, half));
        let one = _mm_add_epi32(pairs, _mm_shuffle_epi32::<0b01>(pairs));
        _mm_cvtsi128_si32(one)
    }

    /// Eight floats from `slice[at..at + 8]`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn load_ps(slice: &[f32], at: usize) -> __m256 {
        let eight = &slice[at..at + 8];
        // SAFETY: `eight` holds exactly eight floats (the range is checked
        // above), and `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(eight.as_ptr()) }
    }

    /// 32 bytes from `slice[at..at + 32]`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load_si(slice: &[i8], at: usize) -> __m256i {
        let bytes = &slice[at..at + 32];
        // SAFETY: `bytes` holds exactly 32 bytes (the range is checked
        // above), and `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
    }

    /// Four accumulators hide the FMA latency when the data is in cache.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (lane, sum) in acc.iter_mut().enumerate() {
                let at = i + lane * 8;
                *sum = _mm256_fmadd_ps(load_ps(a, at), load_ps(b, at), *sum);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(load_ps(a, i), load_ps(b, i), acc[0]);
            i += 8;
        }
        let total = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut sum = sum_ps(total);
        for j in i..n {
            sum += a[j] * b[j];
        }
        sum
    }

    /// One query against four rows, two accumulators per row.
    #[target_feature(enable = "avx2,fma")]
    fn dot4(rows: [&[f32]; 4], query: &[f32]) -> [f32; 4] {
        let n = query.len();
        let rows = rows.map(|row| &row[..n]);
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        let mut i = 0;
        while i + 16 <= n {
            let q0 = load_ps(query, i);
            let q1 = load_ps(query, i + 8);
            for (row, sums) in rows.iter().zip(acc.iter_mut()) {
                sums[0] = _mm256_fmadd_ps(load_ps(row, i), q0, sums[0]);
                sums[1] = _mm256_fmadd_ps(load_ps(row, i + 8), q1, sums[1]);
            }
            i += 16;
        }
        while i + 8 <= n {
            let q0 = load_ps(query, i);
            for (row, sums) in rows.iter().zip(acc.iter_mut()) {
                sums[0] = _mm256_fmadd_ps(load_ps(row, i), q0, sums[0]);
            }
            i += 8;
        }
        let mut out = [0.0; 4];
        for ((row, sums), score) in rows.iter().zip(acc).zip(out.iter_mut()) {
            let mut sum = sum_ps(_mm256_add_ps(sums[0], sums[1]));
            for j in i..n {
                sum += row[j] * query[j];
            }
            *score = sum;
        }
        out
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i + 32 <= n {
            let va = load_si(a, i);
            let vb = load_si(b, i);
            // |a| as unsigned bytes times b carrying a's sign: a × b.
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(va, va), _mm256_sign_epi8(vb, va));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
            i += 32;
        }
        let mut sum = sum_epi32(acc);
        for j in i..n {
            sum += i32::from(a[j]) * i32::from(b[j]);
        }
        sum
    }

    /// One int8 query against four rows.
    #[target_feature(enable = "avx2")]
    fn dot4_i8(rows: [&[i8]; 4], query: &[i8]) -> [i32; 4] {
        let n = query.len();
        let rows = rows.map(|row| &row[..n]);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut i = 0;
        while i + 32 <= n {
            let q = load_si(query, i);
            let magnitude = _mm256_sign_epi8(q, q);
            for (row, sum) in rows.iter().zip(acc.iter_mut()) {
                let signed = _mm256_sign_epi8(load_si(row, i), q);
                let pairs = _mm256_maddubs_epi16(magnitude, signed);
                *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones));
            }
            i += 32;
        }
        let mut out = [0; 4];
        for ((row, sum), score) in rows.iter().zip(acc).zip(out.iter_mut()) {
            let mut total = sum_epi32(sum);
            for j in i..n {
                total += i32::from(row[j]) * i32::from(query[j]);
            }
            *score = total;
        }
        out
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn scan_f32<R, E>(matrix: &[f32], query: &[f32], rows: R, mut emit: E)
    where
        R: Iterator<Item = usize>,
        E: FnMut(usize, f32),
    {
        let dims = query.len();
        let row_of = |row: usize| &matrix[row * dims..][..dims];
        let mut block = [0_usize; 4];
        let mut filled = 0;
        for row in rows {
            block[filled] = row;
            filled += 1;
            if filled == 4 {
                let scores = dot4(block.map(row_of), query);
                for (&row, score) in block.iter().zip(scores) {
                    emit(row, score);
                }
                filled = 0;
            }
        }
        for &row in &block[..filled] {
            emit(row, dot(row_of(row), query));
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn scan_i8<R, E>(codes: &[i8], query: &[i8], rows: R, mut emit: E)
    where
        R: Iterator<Item = usize>,
        E: FnMut(usize, i32),
    {
        let dims = query.len();
        let row_of = |row: usize| &codes[row * dims..][..dims];
        let mut block = [0_usize; 4];
        let mut filled = 0;
        for row in rows {
            block[filled] = row;
            filled += 1;
            if filled == 4 {
                let scores = dot4_i8(block.map(row_of), query);
                for (&row, score) in block.iter().zip(scores) {
                    emit(row, score);
                }
                filled = 0;
            }
        }
        for &row in &block[..filled] {
            emit(row, dot_i8(row_of(row), query));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;

    /// 64 bytes from `slice[at..at + 64]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    fn load(slice: &[i8], at: usize) -> __m512i {
        let bytes = &slice[at..at + 64];
        // SAFETY: `bytes` holds exactly 64 bytes (the range is checked
        // above), and `loadu` has no alignment requirement.
        unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
    }

    /// The last `slice.len() - at` (< 64) bytes of `slice`; other lanes are zero.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    fn load_tail(slice: &[i8], at: usize) -> __m512i {
        let rest = &slice[at..];
        debug_assert!(rest.len() < 64);
        let mask = (1_u64 << rest.len()) - 1;
        // SAFETY: the mask enables only lanes below `rest.len()`, so only
        // bytes of `rest` are read (masked-off lanes are not accessed and
        // cannot fault); there is no alignment requirement.
        unsafe { _mm512_maskz_loadu_epi8(mask, rest.as_ptr()) }
    }

    /// `|a| · b·sign(a)` summed into `sum`: `dpbusd` wants its first operand
    /// unsigned, so a's signs move onto b (a masked negation; AVX-512 has
    /// no byte `sign` instruction).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    fn add_products(sum: __m512i, a: __m512i, b: __m512i) -> __m512i {
        let negative = _mm512_movepi8_mask(a);
        let signed = _mm512_mask_sub_epi8(b, negative, _mm512_setzero_si512(), b);
        _mm512_dpbusd_epi32(sum, _mm512_abs_epi8(a), signed)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut sum = _mm512_setzero_si512();
        let mut at = 0;
        while at + 64 <= n {
            sum = add_products(sum, load(a, at), load(b, at));
            at += 64;
        }
        if at < n {
            sum = add_products(sum, load_tail(a, at), load_tail(b, at));
        }
        _mm512_reduce_add_epi32(sum)
    }

    /// One int8 query against four rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn dot4_i8(rows: [&[i8]; 4], query: &[i8]) -> [i32; 4] {
        let n = query.len();
        let rows = [&rows[0][..n], &rows[1][..n], &rows[2][..n], &rows[3][..n]];
        let mut sums = [_mm512_setzero_si512(); 4];
        let mut at = 0;
        while at + 64 <= n {
            let q = load(query, at);
            for (row, sum) in rows.iter().zip(sums.iter_mut()) {
                *sum = add_products(*sum, q, load(row, at));
            }
            at += 64;
        }
        if at < n {
            let q = load_tail(query, at);
            for (row, sum) in rows.iter().zip(sums.iter_mut()) {
                *sum = add_products(*sum, q, load_tail(row, at));
            }
        }
        [
            _mm512_reduce_add_epi32(sums[0]),
            _mm512_reduce_add_epi32(sums[1]),
            _mm512_reduce_add_epi32(sums[2]),
            _mm512_reduce_add_epi32(sums[3]),
        ]
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn scan_i8<R, E>(codes: &[i8], query: &[i8], rows: R, mut emit: E)
    where
        R: Iterator<Item = usize>,
        E: FnMut(usize, i32),
    {
        let dims = query.len();
        let row_of = |row: usize| &codes[row * dims..][..dims];
        let mut block = [0_usize; 4];
        let mut filled = 0;
        for row in rows {
            block[filled] = row;
            filled += 1;
            if filled == 4 {
                let scores = dot4_i8(block.map(row_of), query);
                for (&row, score) in block.iter().zip(scores) {
                    emit(row, score);
                }
                filled = 0;
            }
        }
        for &row in &block[..filled] {
            emit(row, dot_i8(row_of(row), query));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(len: usize, step: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * step).sin()).collect()
    }

    fn codes(len: usize, seed: u64) -> Vec<i8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..len).map(|_| rng.i8(-127..=127)).collect()
    }

    const LENGTHS: [usize; 11] = [0, 1, 7, 8, 15, 16, 31, 33, 64, 1536, 1537];

    #[test]
    fn the_simd_float_kernels_match_the_plain_sum() {
        for len in LENGTHS {
            let a = floats(len, 0.37);
            let b = floats(len, 0.11);
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(
                (dot_portable(&a, &b) - plain).abs() < 1e-3,
                "portable {len}"
            );
            assert!((dot(&a, &b) - plain).abs() < 1e-3, "dispatched {len}");
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // SAFETY: the CPU has AVX2 and FMA, checked just above.
                let simd = unsafe { avx2::dot(&a, &b) };
                assert!((simd - dot_portable(&a, &b)).abs() < 1e-3, "avx2 {len}");
            }
            // Four rows through the blocked scan, one more through the tail.
            let matrix: Vec<f32> = (0..5)
                .flat_map(|r| floats(len, 0.05 * r as f32 + 0.2))
                .collect();
            let mut scores = Vec::new();
            scan_f32(&matrix, &b, [4, 0, 3, 1, 2].into_iter(), |row, score| {
                scores.push((row, score))
            });
            assert_eq!(scores.len(), 5);
            for (row, score) in scores {
                let expected = dot_portable(&matrix[row * len..][..len], &b);
                assert!((score - expected).abs() < 1e-3, "scan {len} row {row}");
            }
        }
    }

    #[test]
    fn the_simd_int8_kernels_match_the_plain_sum() {
        for len in LENGTHS {
            let a = codes(len, 1);
            let b = codes(len, 2);
            let plain = dot_i8_portable(&a, &b);
            assert_eq!(dot_i8(&a, &b), plain, "dispatched {len}");
            let extremes = vec![-127_i8; len];
            assert_eq!(
                dot_i8(&extremes, &extremes),
                127 * 127 * len as i32,
                "no saturation {len}"
            );
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx2() {
                    // SAFETY: the CPU has AVX2, checked just above.
                    assert_eq!(unsafe { avx2::dot_i8(&a, &b) }, plain, "avx2 {len}");
                }
                if has_avx512_vnni() {
                    // SAFETY: the CPU has AVX-512 VNNI, checked just above.
                    assert_eq!(unsafe { avx512::dot_i8(&a, &b) }, plain, "vnni {len}");
                }
            }
            let matrix: Vec<i8> = (0..6).flat_map(|r| codes(len, 10 + r)).collect();
            let check = |name: &str, scores: Vec<(usize, i32)>| {
                assert_eq!(scores.len(), 6);
                for (row, score) in scores {
                    let plain = dot_i8_portable(&matrix[row * len..][..len], &b);
                    assert_eq!(score, plain, "{name} scan {len}");
                }
            };
            let mut scores = Vec::new();
            scan_i8(&matrix, &b, (0..6).rev(), |row, score| {
                scores.push((row, score))
            });
            check("dispatched", scores);
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                let mut scores = Vec::new();
                // SAFETY: the CPU has AVX2, checked just above.
                unsafe {
                    avx2::scan_i8(&matrix, &b, (0..6).rev(), |row, score| {
                        scores.push((row, score))
                    })
                };
                check("avx2", scores);
            }
        }
    }

    #[test]
    fn the_kernel_in_use_is_named() {
        assert!(!kernel_name().is_empty());
    }
}
