//! Which vector instructions the CPU kernels run with on this machine, for benchmark records:
//! a timing means little without the instruction set behind it.
//!
//! The ops' loops are compiled several times (`multiversion`) and one copy is chosen at run
//! time; gemm, which the matrix products use (candle's too), chooses its micro-kernels the same
//! way. These functions apply the same tests.

/// The instruction-set level the ops' own kernels use here: `"avx512"` (x86-64-v4: AVX-512 F,
/// BW, CD, DQ and VL), `"avx2+fma"`, `"avx"`, `"neon"` or `"scalar"`.
///
/// ```
/// let level = xray_ops::isa::kernel_level();
/// assert!(["avx512", "avx2+fma", "avx", "neon", "scalar"].contains(&level));
/// ```
pub fn kernel_level() -> &'static str {
    level(true)
}

/// The micro-kernels gemm's single-precision matrix products use here: `"avx512"` where the
/// CPU is x86-64-v4 (this crate turns on gemm's `x86-v4` feature), `"avx2+fma"` (x86-64-v3),
/// `"neon"`, or `"scalar"` (gemm has no AVX-only kernels).
pub fn matmul_level() -> &'static str {
    level(false)
}

/// The best level this CPU has, among those with kernels (`with_avx`: plain AVX has some).
fn level(with_avx: bool) -> &'static str {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = with_avx;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has_x86_64_v4() {
            return "avx512";
        }
        if has!("avx2") && has!("fma") {
            return "avx2+fma";
        }
        if with_avx && has!("avx") {
            return "avx";
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            return "neon";
        }
    }
    "scalar"
}

/// The CPU's model name as the operating system gives it (`/proc/cpuinfo` on Linux), or
/// `"unknown"`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(target_arch = "x86_64")]
fn has_x86_64_v4() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512cd")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512vl")
}
