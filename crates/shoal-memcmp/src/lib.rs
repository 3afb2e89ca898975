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
//!
//! A crate of its own, built `no_builtins`, so that the compiler never turns
//! the code here back into a call to `memcmp` or `bcmp` (it rewrites
//! `memcmp(..) != 0` as `bcmp(..)`, which inside `bcmp` is endless
//! recursion, compiled to a trap).

#![no_builtins]

/// The eight bytes at `p`, as a number whose order is that of the bytes
/// compared one by one (big-endian).
///
/// # Safety
/// `p..p + 8` must be readable.
#[inline(always)]
unsafe fn word(p: *const u8) -> u64 {
    // SAFETY: the caller's promise.
    u64::from_be(unsafe { p.cast::<u64>().read_unaligned() })
}

/// The order of the `n` bytes at `a` and at `b`, as C's `memcmp` gives it.
/// Raw pointers and plain loops only: in this `no_builtins` crate the
/// standard library's slice helpers are not inlined.
///
/// # Safety
/// `a..a + n` and `b..b + n` must be readable.
#[inline(always)]
unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n < 8 {
        let mut i = 0;
        while i < n {
            // SAFETY: i < n.
            let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
            if x != y {
                return i32::from(x) - i32::from(y);
            }
            i += 1;
        }
        return 0;
    }
    // Whole words, then the last word, which may overlap bytes already
    // found equal (so they cannot change the order).
    let last = n - 8;
    let mut at = 0;
    loop {
        // SAFETY: at <= n - 8.
        let (x, y) = unsafe { (word(a.add(at)), word(b.add(at))) };
        if x != y {
            return if x < y { -1 } else { 1 };
        }
        if at == last {
            return 0;
        }
        at = if at + 8 < last { at + 8 } else { last };
    }
}

/// C's `memcmp`: the sign of the first differing byte of `a` and `b` (as
/// unsigned), over `n` bytes; 0 if they are equal.
///
/// # Safety
/// `a..a + n` and `b..b + n` must be readable.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's promise is `compare`'s.
    unsafe { compare(a, b, n) }
}

/// C's `bcmp`: 0 if the `n` bytes at `a` and `b` are equal, else non-zero.
///
/// # Safety
/// `a..a + n` and `b..b + n` must be readable.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's promise is `compare`'s.
    i32::from(unsafe { compare(a, b, n) } != 0)
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
