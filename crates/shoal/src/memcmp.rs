//! `memcmp` and `bcmp` for the whole `shoal` process, in place of glibc's.
//!
//! On a CPU with AVX-512 (the AMD EPYC VMs this project is measured on),
//! glibc's `memcmp` and `bcmp` resolve to `__memcmp_evex_movbe`, which reads
//! a short string with a masked AVX-512 load and tests the result through an
//! opmask register. The broker compares a name or two per message (the queue
//! a routing key names, the exchange a channel last wrote to), and in a
//! paced run that function alone was 6.5% of the broker's profile samples,
//! nearly all of them on the masked load and the opmask read; with these in
//! its place the broker's CPU time per message fell by about a sixth
//! (docs/BENCHMARKS.md, "eighth round"). In a tight loop glibc's version is
//! as fast as these, so the cost comes with the broker's way of running:
//! a wake-up per client write, a few dozen comparisons, and sleep again.
//!
//! Compared strings here are names, mostly under 32 bytes: these read eight
//! bytes at a time, and the last eight bytes (overlapping) for a tail, so a
//! name costs a few loads and no vector registers. Rust's `==` on byte
//! slices and `str` calls `bcmp`, and `Ord` calls `memcmp`; the linker binds
//! the binary's own calls (and those of the C code linked into it) to these.

/// The eight bytes of `s` at `at`, as a number whose order is that of the
/// bytes compared one by one (big-endian).
#[inline(always)]
fn word(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_be_bytes(w)
}

/// The order of two byte strings of one length, as C's `memcmp` gives it.
fn compare(a: &[u8], b: &[u8]) -> i32 {
    let n = a.len().min(b.len());
    if n < 8 {
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return i32::from(*x) - i32::from(*y);
            }
        }
        return 0;
    }
    // Whole words, then the last word, which may overlap bytes already
    // found equal (so they cannot change the order).
    let mut at = 0;
    loop {
        let (x, y) = (word(a, at), word(b, at));
        if x != y {
            return if x < y { -1 } else { 1 };
        }
        if at == n - 8 {
            return 0;
        }
        at = (at + 8).min(n - 8);
    }
}

/// C's `memcmp`: the sign of the first differing byte of `a` and `b` (as
/// unsigned), over `n` bytes; 0 if they are equal.
///
/// # Safety
/// `a..a + n` and `b..b + n` must be readable.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    // SAFETY: the caller gives `n` readable bytes at each (not null, n > 0).
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, n),
            std::slice::from_raw_parts(b, n),
        )
    };
    compare(a, b)
}

/// C's `bcmp`: 0 if the `n` bytes at `a` and `b` are equal, else non-zero.
///
/// # Safety
/// `a..a + n` and `b..b + n` must be readable.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's promise is `memcmp`'s.
    i32::from(unsafe { memcmp(a, b, n) } != 0)
}

#[cfg(test)]
mod tests {
    use super::{bcmp, memcmp};

    /// The definition, one byte at a time.
    fn reference(a: &[u8], b: &[u8]) -> i32 {
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return i32::from(*x) - i32::from(*y);
            }
        }
        0
    }

    /// Every length up to 70 (words, tails, and under a word), with the
    /// first difference at every place and in both directions, and with
    /// bytes that differ only in their high bit (unsigned comparison).
    #[test]
    fn they_agree_with_the_definition() {
        for n in 0..70usize {
            let a: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
            let c = a.clone();
            // SAFETY: both slices hold `n` bytes.
            let same = unsafe {
                (
                    memcmp(a.as_ptr(), c.as_ptr(), n),
                    bcmp(a.as_ptr(), c.as_ptr(), n),
                )
            };
            assert_eq!(same, (0, 0), "equal, n={n}");
            for at in 0..n {
                for delta in [1u8, 0x80, 0xff] {
                    let mut b = a.clone();
                    b[at] = b[at].wrapping_add(delta);
                    let want = reference(&a, &b).signum();
                    // SAFETY: both slices hold `n` bytes.
                    let (m, e) = unsafe {
                        (
                            memcmp(a.as_ptr(), b.as_ptr(), n),
                            bcmp(a.as_ptr(), b.as_ptr(), n),
                        )
                    };
                    assert_eq!(m.signum(), want, "memcmp n={n} at={at} delta={delta}");
                    assert_ne!(e, 0, "bcmp n={n} at={at} delta={delta}");
                    // SAFETY: as above.
                    let back = unsafe { memcmp(b.as_ptr(), a.as_ptr(), n) };
                    assert_eq!(back.signum(), -want, "memcmp reversed n={n} at={at}");
                }
            }
        }
    }

    /// A difference past `n` is not looked at.
    #[test]
    fn bytes_past_the_length_do_not_count() {
        let a = *b"queue-name-0001X";
        let b = *b"queue-name-0001Y";
        for n in 0..15 {
            // SAFETY: both arrays hold 16 bytes.
            unsafe {
                assert_eq!(memcmp(a.as_ptr(), b.as_ptr(), n), 0);
                assert_eq!(bcmp(a.as_ptr(), b.as_ptr(), n), 0);
            }
        }
        // SAFETY: as above.
        unsafe {
            assert!(memcmp(a.as_ptr(), b.as_ptr(), 16) < 0);
            assert_ne!(bcmp(a.as_ptr(), b.as_ptr(), 16), 0);
        }
    }
}
