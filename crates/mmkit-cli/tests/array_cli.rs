//! `mmkit array info|create|stats`, run as the real binary, checked
//! against numpy.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

mod common;
use common::{mkfifo, run_limited};

fn mmkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmkit")).args(args).output().expect("run mmkit")
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "mmkit failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("valid JSON")
}

fn python(code: &str, args: &[&str]) -> String {
    let out = Command::new("python3").arg("-c").arg(code).args(args).output().expect("python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("No module named 'numpy'"), "numpy is needed: python3 -m pip install numpy");
    assert!(out.status.success(), "python failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn one_line_error(o: &Output) -> String {
    assert!(!o.status.success(), "expected failure, got: {}", String::from_utf8_lossy(&o.stdout));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("mmkit: "), "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An `.npy` v1.0 image with `text` as its header dict, padded so the
/// data starts at a multiple of 64, followed by `data`.
fn npy(text: &str, data: &[u8]) -> Vec<u8> {
    let mut t = text.as_bytes().to_vec();
    let total = 10 + t.len() + 1;
    t.extend(std::iter::repeat_n(b' ', (64 - total % 64) % 64));
    t.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(t.len() as u16).to_le_bytes());
    out.extend_from_slice(&t);
    out.extend_from_slice(data);
    out
}

#[test]
fn create_info_and_numpy_agree() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    let o = mmkit(&["array", "create", s(&p), "--dtype", "f32", "--shape", "1000,3", "--fill", "-1.5"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info = json(&mmkit(&["array", "info", "--json", s(&p)]));
    assert_eq!(info["shape"], serde_json::json!([1000, 3]));
    assert_eq!(info["descr"], "<f4");
    assert_eq!(info["dtype"], "float32");
    assert_eq!(info["order"], "C");
    assert_eq!(info["version"], "1.0");
    assert_eq!(info["data_offset"].as_u64().unwrap() % 64, 0);
    assert_eq!(info["file_size"], info["data_offset"].as_u64().unwrap() + 12000);
    let out = python(
        "import numpy as np, sys; a = np.load(sys.argv[1], mmap_mode='r'); print(a.dtype, a.shape, float(a.sum()))",
        &[s(&p)],
    );
    assert_eq!(out.trim(), "float32 (1000, 3) -4500.0");

    let text = String::from_utf8(mmkit(&["array", "info", s(&p)]).stdout).unwrap();
    assert!(text.contains("shape:       (1000, 3)") && text.contains("<f4"), "{text}");

    // Fortran order, another version, a 0-d array, complex fill.
    let f = dir.path().join("f.npy");
    let o = mmkit(&[
        "array",
        "create",
        s(&f),
        "--dtype",
        "c64",
        "--shape",
        "2,3",
        "--order",
        "f",
        "--version",
        "2",
        "--fill",
        "1,-2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = python(
        "import numpy as np, sys; a = np.load(sys.argv[1]); print(a.flags.f_contiguous, a.dtype, a[1, 2], np.lib.format.read_magic(open(sys.argv[1], 'rb')))",
        &[s(&f)],
    );
    assert_eq!(out.trim(), "True complex64 (1-2j) (2, 0)");
    let z = dir.path().join("z.npy");
    assert!(
        mmkit(&["array", "create", s(&z), "--dtype", "i64", "--shape", "", "--fill", "7"]).status.success()
    );
    assert_eq!(
        python("import numpy as np, sys; a = np.load(sys.argv[1]); print(a.shape, a)", &[s(&z)]).trim(),
        "() 7"
    );
}

#[test]
fn stats_match_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    python(
        r#"
import numpy as np, sys, os
d = sys.argv[1]
rng = np.random.default_rng(7)
np.save(os.path.join(d, 'm.npy'), rng.normal(size=(5000, 4)))
np.save(os.path.join(d, 'f.npy'), np.asfortranarray(rng.integers(-100, 100, size=(300, 3), dtype='i4')))
np.save(os.path.join(d, 'v.npy'), np.arange(10, dtype='>u2'))
"#,
        &[d],
    );
    for name in ["m", "f", "v"] {
        let p = dir.path().join(format!("{name}.npy"));
        let got = json(&mmkit(&["array", "stats", "--json", s(&p)]));
        let expected: serde_json::Value = serde_json::from_str(&python(
            r#"
import numpy as np, sys, json
a = np.load(sys.argv[1]).astype('f8')
a = a.reshape(a.shape[0], -1) if a.ndim == 2 else a.reshape(-1, 1)
print(json.dumps([dict(min=float(c.min()), max=float(c.max()), mean=float(c.mean()), sum=float(c.sum()), count=len(c)) for c in a.T]))
"#,
            &[s(&p)],
        ))
        .unwrap();
        let cols = got["columns"].as_array().unwrap();
        assert_eq!(cols.len(), expected.as_array().unwrap().len(), "{name}");
        for (g, e) in cols.iter().zip(expected.as_array().unwrap()) {
            assert_eq!(g["count"], e["count"], "{name}");
            for k in ["min", "max", "mean", "sum"] {
                let (g, e) = (g[k].as_f64().unwrap(), e[k].as_f64().unwrap());
                assert!((g - e).abs() <= 1e-9 * e.abs().max(1.0), "{name} {k}: {g} vs {e}");
            }
        }
    }
    let text = String::from_utf8(mmkit(&["array", "stats", s(&dir.path().join("v.npy"))]).stdout).unwrap();
    assert!(text.contains("all") && text.contains("45"), "{text}");
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.npy");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("text.npy");
    std::fs::write(&text, b"not numpy at all\n").unwrap();
    let missing = dir.path().join("missing.npy");
    for cmd in ["info", "stats"] {
        assert!(one_line_error(&mmkit(&["array", cmd, s(&empty)])).contains("empty"));
        assert!(one_line_error(&mmkit(&["array", cmd, s(&text)])).contains("not an .npy file"));
        assert!(one_line_error(&mmkit(&["array", cmd, s(&missing)])).contains("missing.npy"));
    }
    let p = dir.path().join("x.npy");
    let p = s(&p);
    assert!(
        one_line_error(&mmkit(&["array", "create", p, "--dtype", "f5", "--shape", "3"]))
            .contains("unknown dtype")
    );
    assert!(
        one_line_error(&mmkit(&["array", "create", p, "--dtype", "f4", "--shape", "3,x"]))
            .contains("--shape")
    );
    assert!(
        one_line_error(&mmkit(&["array", "create", p, "--dtype", "u8", "--shape", "3", "--fill", "300"]))
            .contains("--fill")
    );
    assert!(mmkit(&["array", "create", p, "--dtype", "c64", "--shape", "3"]).status.success());
    assert!(
        one_line_error(&mmkit(&["array", "create", p, "--dtype", "f4", "--shape", "3"])).contains("--force")
    );
    assert!(one_line_error(&mmkit(&["array", "stats", p])).contains("complex"));
    let three_d = dir.path().join("3d.npy");
    assert!(mmkit(&["array", "create", s(&three_d), "--dtype", "f4", "--shape", "2,2,2"]).status.success());
    assert!(one_line_error(&mmkit(&["array", "stats", s(&three_d)])).contains("1-D or 2-D"));
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in ["info", "create", "stats"] {
        let o = mmkit(&["array", cmd, "--help"]);
        assert!(o.status.success());
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("Example") && text.contains("mmkit array"), "{cmd}: {text}");
    }
}

#[test]
fn info_reports_unsupported_and_big_endian_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    python(
        r#"
import numpy as np, sys, os
d = sys.argv[1]
np.save(os.path.join(d, 'obj.npy'), np.array([1, None], dtype=object), allow_pickle=True)
np.save(os.path.join(d, 'be.npy'), np.arange(6, dtype='>f8').reshape(2, 3))
"#,
        &[d],
    );
    let obj = dir.path().join("obj.npy");
    let text = String::from_utf8(mmkit(&["array", "info", s(&obj)]).stdout).unwrap();
    assert!(text.contains("|O (unsupported: object arrays"), "{text}");
    let info = json(&mmkit(&["array", "info", "--json", s(&obj)]));
    assert_eq!(info["dtype"], serde_json::Value::Null);
    assert!(one_line_error(&mmkit(&["array", "stats", s(&obj)])).contains("object arrays"));

    let be = dir.path().join("be.npy");
    let info = json(&mmkit(&["array", "info", "--json", s(&be)]));
    assert_eq!(info["big_endian"], true);
    assert_eq!(info["descr"], ">f8");
    let stats = json(&mmkit(&["array", "stats", "--json", s(&be)]));
    assert_eq!(stats["columns"][2]["sum"], 7.0);
    assert_eq!(stats["columns"][0]["max"], 3.0);
}

#[test]
fn stats_reads_misaligned_data_by_copying() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("odd.npy");
    let mut text = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }".to_string();
    while 10 + text.len() + 1 < 68 {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    for v in [1.5f64, 2.5, -1.0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&p, bytes).unwrap();
    let stats = json(&mmkit(&["array", "stats", "--json", s(&p)]));
    assert_eq!(stats["columns"][0]["sum"], 3.0);
    assert_eq!(stats["columns"][0]["min"], -1.0);
    let info = json(&mmkit(&["array", "info", "--json", s(&p)]));
    assert_eq!(info["data_offset"], 68);
}

/// Every dtype is printed with numpy's own name (`complex64`, never the
/// Rust-style `c64`, which ndarray-linalg uses for a complex of two f64),
/// in text, JSON and errors; `--dtype` takes numpy's names, descrs and the
/// Rust-style names.
#[test]
fn dtype_names_are_numpys() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let names = python(
        r#"
import numpy as np, sys, os
names = ['bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64',
         'float16', 'float32', 'float64', 'complex64', 'complex128']
for n in names:
    np.save(os.path.join(sys.argv[1], n + '.npy'), np.zeros(3, dtype=n))
    print(n, np.dtype(n).name, np.dtype(n).str)
"#,
        &[d],
    );
    for line in names.lines() {
        let [file, numpy_name, descr] = line.split(' ').collect::<Vec<_>>()[..] else { panic!("{line}") };
        let p = dir.path().join(format!("{file}.npy"));
        let info = json(&mmkit(&["array", "info", "--json", s(&p)]));
        assert_eq!(info["dtype"], numpy_name, "{line}");
        assert_eq!(info["descr"], descr, "{line}");
        let text = String::from_utf8(mmkit(&["array", "info", s(&p)]).stdout).unwrap();
        assert!(text.contains(&format!("dtype:       {descr} ({numpy_name})")), "{text}");
        if !numpy_name.starts_with("complex") {
            let stats = json(&mmkit(&["array", "stats", "--json", s(&p)]));
            assert_eq!(stats["dtype"], numpy_name, "{line}");
            assert_eq!(stats["descr"], descr, "{line}");
        }
    }

    // --dtype: numpy's name, the descr and the Rust-style name make the
    // same file; what is printed back is numpy's name.
    for (i, spelling) in ["complex64", "<c8", "c8", "c64", "Complex64"].into_iter().enumerate() {
        let p = dir.path().join(format!("c{i}.npy"));
        let o = mmkit(&["array", "create", s(&p), "--dtype", spelling, "--shape", "2"]);
        // The path is left out: a temporary name could hold any letters.
        let out = String::from_utf8_lossy(&o.stdout).replace(s(&p), "FILE");
        assert!(o.status.success() && out.contains("complex64 (2,)"), "{spelling}: {out}");
        assert!(!out.contains("c64"), "{spelling}: {out}");
        assert_eq!(json(&mmkit(&["array", "info", "--json", s(&p)]))["descr"], "<c8", "{spelling}");
    }
    for (spelling, numpy_name) in
        [("f16", "float16"), ("float16", "float16"), ("<i2", "int16"), ("u8", "uint8")]
    {
        let p = dir.path().join(format!("{numpy_name}-{}.npy", spelling.replace('<', "")));
        let o = mmkit(&["array", "create", s(&p), "--dtype", spelling, "--shape", "2"]);
        assert!(String::from_utf8_lossy(&o.stdout).contains(numpy_name), "{spelling}");
    }

    // Errors name numpy's types too.
    let c = dir.path().join("c0.npy");
    let err = one_line_error(&mmkit(&["array", "stats", s(&c)])).replace(s(&c), "FILE");
    assert!(err.contains("complex64 (<c8)") && !err.contains("c64"), "{err}");
    let err =
        one_line_error(&mmkit(&["array", "create", s(&c), "--dtype", "c65", "--shape", "2", "--force"]));
    assert!(err.contains("complex64") && err.contains("float32") && !err.contains(" c64"), "{err}");
    let err = one_line_error(&mmkit(&[
        "array",
        "create",
        s(&c),
        "--dtype",
        "u8",
        "--shape",
        "2",
        "--fill",
        "-1",
        "--force",
    ]));
    assert!(err.contains("uint8"), "{err}");
}

/// `array stats` on a 128-byte file whose header claims a huge number of
/// columns and no rows is a quick one-line error, not an abort
/// (2^40 columns) or seconds of allocating (10^8 columns).
#[test]
fn stats_of_a_tiny_file_with_a_huge_column_count_is_a_quick_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cols.npy");
    for cols in ["1099511627776", "100000000"] {
        let header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': (0, {cols}), }}");
        std::fs::write(&path, npy(&header, &[])).unwrap();
        let out = run_limited(&["array", "stats", "--json", s(&path)], Duration::from_secs(10))
            .unwrap_or_else(|| panic!("array stats ran for 10 s on a 128-byte file ({cols} columns)"));
        let err = one_line_error(&out);
        assert!(err.contains("cols.npy") && err.contains("columns"), "{err}");
    }
}

/// `array info` and `array stats` on a FIFO fail at once with a one-line
/// error instead of blocking in open(2) until a writer appears.
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.npy");
    mkfifo(&fifo);
    for cmd in ["info", "stats"] {
        let out = run_limited(&["array", cmd, s(&fifo)], Duration::from_secs(10))
            .unwrap_or_else(|| panic!("array {cmd} blocked on a FIFO"));
        let err = one_line_error(&out);
        assert!(err.contains("fifo.npy") && err.contains("not a regular file"), "{err}");
    }
}

/// `array create` with an impossible size fails with a one-line error and
/// loses nothing: an existing array survives `--force`, and a new path is
/// left free (no empty file that a retry would call "exists").
#[test]
fn failed_create_keeps_the_old_array_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.npy");
    let created = mmkit(&["array", "create", s(&old), "--dtype", "f4", "--shape", "4", "--fill", "7"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let huge = ["--dtype", "u1", "--shape", "9223372036854775807"];
    one_line_error(&mmkit(&[&["array", "create", s(&old)], &huge[..], &["--force"]].concat()));
    let info = mmkit(&["array", "info", "--json", s(&old)]);
    assert_eq!(json(&info)["shape"], serde_json::json!([4]));

    let new = dir.path().join("new.npy");
    one_line_error(&mmkit(&[&["array", "create", s(&new)], &huge[..]].concat()));
    assert!(!new.exists(), "the failed create left a file");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["old.npy"]);
}

/// `array info` shows the header's descr with control characters escaped:
/// an escaped newline cannot forge an extra line (here a fake `file:`),
/// and escape sequences (here "clear screen") do not reach the terminal.
#[test]
fn info_escapes_control_characters_of_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("esc.npy");
    let header =
        "{'descr': '\x1b[2J<f4\\\nfile:        /etc/passwd', 'fortran_order': False, 'shape': (2,), }";
    std::fs::write(&path, npy(header, &[0; 8])).unwrap();
    let out = mmkit(&["array", "info", s(&path)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
    assert_eq!(text.lines().filter(|l| l.starts_with("file:")).count(), 1, "{text:?}");
    assert!(text.contains("dtype:       \\u{1b}[2J<f4\\nfile:        /etc/passwd (unsupported"), "{text:?}");
}
