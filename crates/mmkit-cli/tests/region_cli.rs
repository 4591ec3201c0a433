//! The `mmkit resident`, `cp`, `shm` and `demo` commands, run as the real
//! binary. The residency counts are compared with vmtouch's when vmtouch
//! is installed (CI installs it).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

fn mmkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmkit")).args(args).output().expect("run mmkit")
}

fn mmkit_paths(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmkit")).args(args).args(paths).output().expect("run mmkit")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "mmkit failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("valid JSON")
}

/// A scratch directory on a real filesystem (not tmpfs when the target
/// directory is on disk), so eviction means something.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Pages of a tmpfs cannot be evicted; the eviction checks need a disk.
fn can_evict(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|s| s.f_type != libc::TMPFS_MAGIC)
}

fn write_synced(path: &Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    std::fs::write(path, &data).unwrap();
    File::open(path).unwrap().sync_all().unwrap();
}

/// Reads exactly `pages` pages at `first` with readahead turned off, so
/// just those become resident.
fn read_pages(path: &Path, first: u64, pages: u64) {
    let f = File::open(path).unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::Random).unwrap();
    let page = rustix::param::page_size() as u64;
    let mut buf = vec![0u8; (pages * page) as usize];
    let _ = rustix::io::pread(&f, &mut buf, first * page).unwrap();
}

/// The tree of the vmtouch comparison: a large partially cached file,
/// empty files, a directory of many small files with every third cached,
/// a hard link, a symlink, a FIFO and a nested directory.
fn make_tree(root: &Path) {
    let big = root.join("big.bin");
    write_synced(&big, 3 << 20, 1);
    std::fs::create_dir_all(root.join("many/nested")).unwrap();
    for i in 0..200 {
        write_synced(&root.join(format!("many/f{i:03}")), 1 + i * 97, i as u8);
    }
    write_synced(&root.join("many/nested/odd"), 12345, 9);
    File::create(root.join("empty1")).unwrap();
    File::create(root.join("many/empty2")).unwrap();
    std::fs::hard_link(&big, root.join("big.hardlink")).unwrap();
    std::os::unix::fs::symlink("big.bin", root.join("big.symlink")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .unwrap();
    let o = mmkit_paths(&["resident", "--evict", "--summary"], &[root]);
    assert!(o.status.success(), "{}", stderr(&o));
    read_pages(&big, 0, 3);
    read_pages(&big, 100, 50);
    read_pages(&big, 767, 1);
    for i in (0..200).step_by(3) {
        read_pages(&root.join(format!("many/f{i:03}")), 0, 1);
    }
}

/// Records that a test cannot run here: prints why, or fails when
/// `MMKIT_TEST_NO_SKIP` is set (CI sets it: there every test must run).
fn skip(why: &str) {
    assert!(std::env::var_os("MMKIT_TEST_NO_SKIP").is_none(), "test skipped under MMKIT_TEST_NO_SKIP: {why}");
    eprintln!("note: test skipped: {why}");
}

/// Whether vmtouch can be run. CI (`.ci/run`) installs it and sets
/// `MMKIT_REQUIRE_VMTOUCH`, so there a missing vmtouch fails the test
/// instead of skipping the comparison.
fn have_vmtouch() -> bool {
    let found = Command::new("vmtouch").arg("-h").output().is_ok();
    assert!(
        found || std::env::var_os("MMKIT_REQUIRE_VMTOUCH").is_none(),
        "MMKIT_REQUIRE_VMTOUCH is set but vmtouch cannot be run (apt-get install vmtouch)"
    );
    found
}

/// vmtouch -v: per-file "[chart] resident/total" lines and the totals.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    files: BTreeMap<String, String>,
    resident: u64,
    total: u64,
    file_count: u64,
}

fn vmtouch_snapshot(root: &Path) -> Snapshot {
    let o = Command::new("vmtouch").arg("-v").arg(root).output().unwrap();
    assert!(o.status.success());
    let text = stdout(&o);
    let mut files = BTreeMap::new();
    let mut last_path = None;
    let (mut resident, mut total, mut file_count) = (0, 0, 0);
    for line in text.lines() {
        let line = line.trim_start_matches('\r');
        if let Some(rest) = line.trim().strip_prefix("Resident Pages: ") {
            let pair = rest.split_whitespace().next().unwrap();
            let (r, t) = pair.split_once('/').unwrap();
            (resident, total) = (r.parse().unwrap(), t.parse().unwrap());
        } else if let Some(rest) = line.trim().strip_prefix("Files: ") {
            file_count = rest.parse().unwrap();
        } else if line.starts_with('[') {
            // vmtouch redraws the chart with '\r'; keep the last drawing.
            let chart = line.rsplit('\r').next().unwrap().to_string();
            files.insert(last_path.take().unwrap(), chart);
        } else if !line.trim().is_empty() && !line.contains(':') {
            last_path = Some(line.to_string());
        }
    }
    Snapshot { files, resident, total, file_count }
}

fn mmkit_snapshot(root: &Path) -> Snapshot {
    let o = mmkit_paths(&["resident", "--map"], &[root]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let mut files = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.windows(2) {
        if pair[1].starts_with('[') && !pair[0].starts_with('[') {
            // vmtouch draws no chart for empty files.
            if !pair[1].ends_with(" 0/0") {
                files.insert(pair[0].to_string(), pair[1].to_string());
            }
        }
    }
    let doc = json(&mmkit_paths(&["resident", "--json", "--summary"], &[root]));
    let t = &doc["totals"];
    Snapshot {
        files,
        resident: t["resident_pages"].as_u64().unwrap(),
        total: t["total_pages"].as_u64().unwrap(),
        file_count: t["files"].as_u64().unwrap(),
    }
}

/// Compares with vmtouch, retrying if the page cache changed between the
/// two vmtouch runs that bracket ours (memory pressure on a busy box).
fn assert_same_as_vmtouch(root: &Path) -> Snapshot {
    for _ in 0..5 {
        let before = vmtouch_snapshot(root);
        let ours = mmkit_snapshot(root);
        let after = vmtouch_snapshot(root);
        if before == after {
            assert_eq!(ours, before, "mmkit resident disagrees with vmtouch");
            return ours;
        }
    }
    panic!("page cache kept changing under the comparison");
}

#[test]
fn resident_counts_equal_vmtouch() {
    if !have_vmtouch() {
        skip("vmtouch not installed (CI installs it)");
        return;
    }
    let dir = scratch();
    make_tree(dir.path());
    let snap = assert_same_as_vmtouch(dir.path());
    // 1 big file (hard link counted once) + 200 small + nested + 2 empty.
    assert_eq!(snap.file_count, 204);
    if can_evict(dir.path()) {
        assert!(snap.resident < snap.total, "tree should be partly cached: {snap:?}");
    }

    // Touch: everything resident, and vmtouch agrees. Proactive reclaim
    // (this VM runs DAMON with a `pageout` scheme) may take a few pages
    // back between the touch and the count, so the touch is retried.
    let mut all = false;
    for _ in 0..5 {
        let doc = json(&mmkit_paths(&["resident", "--touch", "--json"], &[dir.path()]));
        assert_eq!(doc["action"], "touch");
        all = doc["totals"]["resident_pages"] == doc["totals"]["total_pages"];
        let snap = assert_same_as_vmtouch(dir.path());
        if all && snap.resident == snap.total {
            break;
        }
        all = false;
    }
    assert!(all, "--touch never made every page resident");

    // Evict: nothing resident (the files are synced, so clean).
    let o = mmkit_paths(&["resident", "--evict", "--summary"], &[dir.path()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let snap = assert_same_as_vmtouch(dir.path());
    if can_evict(dir.path()) {
        assert_eq!(snap.resident, 0, "{snap:?}");
    }
}

#[test]
fn resident_per_file_counts_and_map() {
    let dir = scratch();
    if !can_evict(dir.path()) {
        skip("scratch directory is a tmpfs: nothing to evict");
        return;
    }
    let f = dir.path().join("f");
    write_synced(&f, 40 * 4096, 3);
    let o = mmkit_paths(&["resident", "--evict", "--summary"], &[&f]);
    assert!(o.status.success());
    read_pages(&f, 10, 5);
    let doc = json(&mmkit_paths(&["resident", "--json", "--map"], &[&f]));
    let file = &doc["files"][0];
    assert_eq!(file["total_pages"], 40);
    let ranges = file["resident_ranges"].as_array().unwrap();
    let covered: u64 = ranges.iter().map(|r| r[1].as_u64().unwrap()).sum();
    assert_eq!(covered, file["resident_pages"].as_u64().unwrap());
    assert!(
        ranges
            .iter()
            .any(|r| r[0].as_u64().unwrap() <= 10 && r[0].as_u64().unwrap() + r[1].as_u64().unwrap() >= 15)
    );
    let text = stdout(&mmkit_paths(&["resident", "--map"], &[&f]));
    assert!(text.contains("[          OOOOO"), "{text}");
}

#[test]
fn resident_reports_bad_paths_and_goes_on() {
    let dir = scratch();
    let good = dir.path().join("good");
    write_synced(&good, 10000, 1);
    let missing = dir.path().join("missing");
    let o = mmkit_paths(&["resident", "--json"], &[&missing, &good]);
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["totals"]["files"], 1);
    assert_eq!(doc["errors"][0]["path"], missing.display().to_string());
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    // Text mode: the error on stderr, the good file still reported.
    let o = mmkit_paths(&["resident"], &[&missing, &good]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("good"));
    assert!(stderr(&o).contains("No such file"), "{}", stderr(&o));
    // A symlink is skipped with a warning, and followed with -f.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let doc = json(&mmkit_paths(&["resident", "--json"], &[&link]));
    assert_eq!(doc["totals"]["files"], 0);
    let doc = json(&mmkit_paths(&["resident", "--json", "-f"], &[&link]));
    assert_eq!(doc["totals"]["files"], 1);
    assert_eq!(doc["totals"]["total_pages"], 3);
    // No paths at all is a usage error.
    assert!(!mmkit(&["resident"]).status.success());
}

// ---------------------------------------------------------------- cp

fn one_line_error(o: &Output) -> String {
    assert!(!o.status.success(), "expected failure, got success");
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "error must be one line: {err:?}");
    assert!(err.starts_with("mmkit: "), "{err}");
    err
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn cp_copies_content_and_permissions_with_every_method() {
    let dir = scratch();
    let src = dir.path().join("src.bin");
    write_synced(&src, 5 * 1024 * 1024 + 17, 5);
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o751)).unwrap();
    for method in ["copy-file-range", "read-write", "mmap"] {
        let dst = dir.path().join(format!("dst-{method}"));
        let o = mmkit_paths(&["cp", "--method", method], &[&src, &dst]);
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap(), "{method}");
        assert_eq!(std::fs::metadata(&dst).unwrap().permissions().mode() & 0o7777, 0o751, "{method}");
    }
    // Replacing an existing DST, with --fsync and a JSON report.
    let dst = dir.path().join("dst-mmap");
    std::fs::write(&dst, b"old contents").unwrap();
    let doc = json(&mmkit_paths(&["cp", "--fsync", "--json"], &[&src, &dst]));
    assert_eq!(doc["bytes"], 5 * 1024 * 1024 + 17);
    assert_eq!(doc["method"], "copy-file-range");
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap());
    // No temporary files left behind.
    assert!(entries(dir.path()).iter().all(|n| !n.contains("mmkit-cp")), "{:?}", entries(dir.path()));
}

#[test]
fn cp_into_directory_and_empty_file() {
    let dir = scratch();
    let src = dir.path().join("empty");
    File::create(&src).unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let o = mmkit_paths(&["cp"], &[&src, &sub]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(sub.join("empty")).unwrap().len(), 0);
}

#[test]
fn cp_errors_are_one_line_and_leave_nothing() {
    let dir = scratch();
    let src = dir.path().join("src");
    write_synced(&src, 100_000, 2);
    let before = entries(dir.path());

    // DST in a missing directory.
    let err = one_line_error(&mmkit_paths(&["cp"], &[&src, &dir.path().join("nope/dst")]));
    assert!(err.contains("nope"), "{err}");
    assert_eq!(entries(dir.path()), before);

    // SRC missing.
    let err = one_line_error(&mmkit_paths(&["cp"], &[&dir.path().join("absent"), &dir.path().join("x")]));
    assert!(err.contains("absent") && err.contains("No such file"), "{err}");

    // SRC a directory.
    let err = one_line_error(&mmkit_paths(&["cp"], &[dir.path(), &dir.path().join("x")]));
    assert!(err.contains("is a directory"), "{err}");

    // Onto itself, directly and through a directory.
    let err = one_line_error(&mmkit_paths(&["cp"], &[&src, &src]));
    assert!(err.contains("same file"), "{err}");
    let err = one_line_error(&mmkit_paths(&["cp"], &[&src, dir.path()]));
    assert!(err.contains("same file"), "{err}");
    assert_eq!(std::fs::metadata(&src).unwrap().len(), 100_000);
    assert_eq!(entries(dir.path()), before);

    // An unwritable destination directory (skipped as root, who may write anyway).
    if !rustix::process::geteuid().is_root() {
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        one_line_error(&mmkit_paths(&["cp"], &[&src, &ro.join("dst")]));
        assert!(entries(&ro).is_empty());
    }
}

/// A failure in the middle of the copy (here: the file size limit, hit
/// after the temporary file exists and part of the data is written)
/// removes the temporary file and leaves an existing DST as it was.
#[test]
fn cp_failing_mid_copy_leaves_dst_untouched() {
    let dir = scratch();
    let src = dir.path().join("src");
    write_synced(&src, 4 << 20, 6);
    let dst = dir.path().join("dst");
    std::fs::write(&dst, b"old contents").unwrap();
    let before = entries(dir.path());
    for method in ["copy-file-range", "read-write", "mmap"] {
        // SIGXFSZ ignored (inherited through exec): writes past the limit
        // (1 or 2 MiB, by the shell's block unit) fail with EFBIG instead
        // of killing the process.
        let script = format!(
            "trap '' XFSZ; ulimit -f 2048; exec '{}' cp --method {method} \"$0\" \"$1\"",
            env!("CARGO_BIN_EXE_mmkit")
        );
        let o = Command::new("sh").arg("-c").arg(&script).arg(&src).arg(&dst).output().unwrap();
        let err = one_line_error(&o);
        assert!(err.contains("too large"), "{method}: {err}");
        assert_eq!(std::fs::read(&dst).unwrap(), b"old contents", "{method}");
        assert_eq!(entries(dir.path()), before, "{method}: temporary file left behind");
    }
}

#[test]
fn cp_keeps_a_large_sparse_file_sparse() {
    let dir = scratch();
    let src = dir.path().join("sparse");
    let f = File::create(&src).unwrap();
    f.set_len(1 << 30).unwrap();
    rustix::io::pwrite(&f, b"start", 0).unwrap();
    rustix::io::pwrite(&f, b"end", (1 << 30) - 3).unwrap();
    f.sync_all().unwrap();
    let dst = dir.path().join("copy");
    let o = mmkit_paths(&["cp"], &[&src, &dst]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = std::fs::metadata(&dst).unwrap();
    assert_eq!(meta.len(), 1 << 30);
    assert!(meta.blocks() * 512 < 1 << 20, "copy allocated {} blocks", meta.blocks());
    let g = File::open(&dst).unwrap();
    let mut buf = [0u8; 5];
    rustix::io::pread(&g, &mut buf, 0).unwrap();
    assert_eq!(&buf, b"start");
    rustix::io::pread(&g, &mut buf[..3], (1 << 30) - 3).unwrap();
    assert_eq!(&buf[..3], b"end");
    rustix::io::pread(&g, &mut buf, 1 << 29).unwrap();
    assert_eq!(buf, [0; 5]);
}

// ---------------------------------------------------------------- shm

fn shm_name(tag: &str) -> String {
    format!("mmkit-cli-test-{tag}-{}", std::process::id())
}

#[test]
fn shm_create_list_inspect_rm() {
    let name = shm_name("life");
    let created = json(&mmkit(&["shm", "create", &name, "--size", "64K", "--json"]));
    assert_eq!(created["size"], 65536);
    assert_eq!(created["mode"], "600");
    assert_eq!(created["path"], format!("/dev/shm/{name}"));
    // Creating it again is an error.
    let err = one_line_error(&mmkit(&["shm", "create", &name, "--size", "4096"]));
    assert!(err.contains(&name), "{err}");

    let list = json(&mmkit(&["shm", "list", "--json"]));
    let entry = list.as_array().unwrap().iter().find(|e| e["name"] == name.as_str()).expect("listed");
    assert_eq!(entry["size"], 65536);
    assert_eq!(entry["mode"], "600");
    assert!(stdout(&mmkit(&["shm", "list"])).contains(&name));

    let info = json(&mmkit(&["shm", "inspect", "--json", &format!("/{name}")]));
    assert_eq!(info["size"], 65536);
    assert_eq!(info["total_pages"], 16);
    assert!(stdout(&mmkit(&["shm", "inspect", &name])).contains("65536"));

    assert!(mmkit(&["shm", "rm", &name]).status.success());
    one_line_error(&mmkit(&["shm", "inspect", &name]));
    one_line_error(&mmkit(&["shm", "rm", &name]));
}

#[test]
fn shm_bad_input() {
    let name = shm_name("bad");
    one_line_error(&mmkit(&["shm", "create", &name, "--size", "12Q"]));
    one_line_error(&mmkit(&["shm", "create", "a/b", "--size", "4096"]));
    one_line_error(&mmkit(&["shm", "inspect", ""]));
    let o = mmkit(&["shm", "create", &name, "--size", "1M", "--mode", "640"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info = json(&mmkit(&["shm", "inspect", "--json", &name]));
    assert_eq!(info["mode"], "640");
    assert_eq!(info["size"], 1 << 20);
    assert!(mmkit(&["shm", "rm", &name]).status.success());
}

/// An empty segment cannot be mapped (Python refuses to create one too):
/// `--size 0` is a one-line error naming the segment, and creates nothing.
/// One that another program made is still shown.
#[test]
fn shm_create_of_size_zero_is_refused() {
    let name = shm_name("zero");
    for size in ["0", "0K"] {
        let o = mmkit(&["shm", "create", &name, "--size", size]);
        assert_eq!(o.status.code(), Some(1));
        let err = one_line_error(&o);
        assert!(err.contains(&name) && err.contains("size is zero"), "{err}");
    }
    one_line_error(&mmkit(&["shm", "inspect", &name]));

    let empty = shm_name("empty");
    File::create(format!("/dev/shm/{empty}")).unwrap();
    let info = mmkit(&["shm", "inspect", "--json", &empty]);
    let removed = mmkit(&["shm", "rm", &empty]);
    assert_eq!(json(&info)["size"], 0);
    assert!(removed.status.success(), "{}", stderr(&removed));
}

// ---------------------------------------------------------------- help

/// The subcommands listed under "Commands:" in a help text.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in [
        &["resident"][..],
        &["cp"],
        &["shm", "create"],
        &["shm", "list"],
        &["shm", "inspect"],
        &["shm", "rm"],
        &["demo"],
        &[],
    ] {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        let o = mmkit(&args);
        assert!(o.status.success(), "{args:?}");
        assert!(stdout(&o).contains("Example"), "{args:?} --help has no example");
    }
    // Every command and subcommand the binary lists, found by walking
    // the help texts, so a new command cannot slip through.
    let mut pending = vec![Vec::<String>::new()];
    let mut visited = 0;
    while let Some(cmd) = pending.pop() {
        let mut args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        args.push("--help");
        let o = mmkit(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let help = stdout(&o);
        assert!(help.contains("Example"), "`mmkit {}` has no example", cmd.join(" "));
        for sub in subcommands(&help) {
            pending.push(cmd.iter().cloned().chain([sub]).collect());
        }
        visited += 1;
    }
    assert!(visited >= 12, "only {visited} commands found");
}

#[test]
fn unknown_command_fails() {
    assert!(!mmkit(&["frobnicate"]).status.success());
}

/// For a file the caller can neither write nor owns, Linux (5.2+) makes
/// mincore report every page resident and refuses cachestat; vmtouch then
/// shows 100%, and so must we. Needs root (to run as `nobody` through
/// setpriv) and vmtouch; skipped otherwise.
#[test]
fn resident_matches_vmtouch_for_files_we_cannot_write() {
    let as_nobody = |program: &str, args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", program])
            .args(args)
            .output()
    };
    if !rustix::process::geteuid().is_root() || !have_vmtouch() {
        skip("needs root and vmtouch");
        return;
    }
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = dir.path().join("not-mine");
    write_synced(&f, 64 * 4096, 4);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = f.to_str().unwrap();
    // As root (who may write it) the truth: nothing cached after evict.
    let doc = json(&mmkit_paths(&["resident", "--json", "--evict"], &[&f]));
    if can_evict(dir.path()) {
        assert_eq!(doc["totals"]["resident_pages"], 0);
    }
    // As nobody, whatever the kernel says (all resident since 5.2), the
    // same as vmtouch. The binary and the file must be reachable by nobody:
    // only that (checked first) may skip; a failing mmkit fails the test.
    let reachable = |program: &str, args: &[&str]| as_nobody(program, args).is_ok_and(|o| o.status.success());
    if !reachable("cat", &[path]) || !reachable(env!("CARGO_BIN_EXE_mmkit"), &["--version"]) {
        skip("setpriv missing, or the test paths are not reachable by nobody here");
        return;
    }
    let o = as_nobody(env!("CARGO_BIN_EXE_mmkit"), &["resident", "--json", path]).unwrap();
    assert!(o.status.success(), "mmkit resident as nobody failed: {}", stderr(&o));
    let ours: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let theirs = stdout(&as_nobody("vmtouch", &[path]).unwrap());
    let line = theirs.lines().find(|l| l.contains("Resident Pages")).unwrap().to_string();
    let pair = line.split_whitespace().nth(2).unwrap();
    let expected = format!("{}/{}", ours["totals"]["resident_pages"], ours["totals"]["total_pages"]);
    assert_eq!(pair, expected, "vmtouch said {line:?}");
    eprintln!("as nobody: mmkit {expected}, vmtouch {pair}");
}

#[test]
fn resident_of_one_missing_path_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let o = mmkit_paths(&["resident"], &[&missing]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("missing") && err.contains("No such file"), "{err}");
    assert!(o.stdout.is_empty(), "no totals for a path that was never read");
}
