//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::process::Command;

/// Runs `python3 -c code args...`, panics with stderr on failure, returns stdout.
pub fn python(code: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python3 is needed for the numpy round-trip tests");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'numpy'"),
        "numpy is needed for these tests: python3 -m pip install numpy"
    );
    assert!(out.status.success(), "python failed:\n{stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Calls `$f::<T>($args)` with `T` chosen from a dtype code such as `f4`.
#[macro_export]
macro_rules! dispatch {
    ($code:expr, $f:ident ( $($arg:expr),* )) => {
        match $code {
            "?" | "b1" => $f::<mmkit_array::Bool>($($arg),*),
            "i1" => $f::<i8>($($arg),*),
            "i2" => $f::<i16>($($arg),*),
            "i4" => $f::<i32>($($arg),*),
            "i8" => $f::<i64>($($arg),*),
            "u1" => $f::<u8>($($arg),*),
            "u2" => $f::<u16>($($arg),*),
            "u4" => $f::<u32>($($arg),*),
            "u8" => $f::<u64>($($arg),*),
            "f2" => $f::<half::f16>($($arg),*),
            "f4" => $f::<f32>($($arg),*),
            "f8" => $f::<f64>($($arg),*),
            "c8" => $f::<mmkit_array::Complex32>($($arg),*),
            "c16" => $f::<mmkit_array::Complex64>($($arg),*),
            other => panic!("no Rust type for {other}"),
        }
    };
}
