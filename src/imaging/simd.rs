//! Run-time choice of AVX2 code: one detection shared by every kernel, and a macro that
//! compiles a function's body a second time for AVX2.
//!
//! The release build targets baseline x86-64, whose loops vectorise over 128 bits at
//! most. A body compiled again with AVX2 enabled does the same IEEE operations in the
//! same order (no fused multiply-adds: AVX2 does not imply FMA, and the compiler never
//! reorders floating-point sums), so both variants give the same bits.

/// Whether the CPU has AVX2 and `CDWQC_NO_SIMD` is unset (set to anything, it keeps the
/// baseline code: the reference of benchmarks).
#[cfg(target_arch = "x86_64")]
pub fn avx2() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| {
        std::env::var_os("CDWQC_NO_SIMD").is_none() && std::arch::is_x86_feature_detected!("avx2")
    })
}

/// Never on other architectures.
#[cfg(not(target_arch = "x86_64"))]
pub fn avx2() -> bool {
    false
}

/// Defines a function whose body also exists compiled for AVX2, taken when [`avx2`]
/// holds. The body must be safe code with concrete argument types.
macro_rules! with_avx2 {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn body($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if $crate::imaging::simd::avx2() {
                    // SAFETY: the CPU has AVX2 (checked at run time).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use with_avx2;
