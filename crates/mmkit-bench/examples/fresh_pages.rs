//! What the first write to a 4 KiB page costs on this machine: the price
//! every unbounded queue segment, new kv page and fresh heap pays, and
//! that a ring reusing its memory never pays.
//!
//! `cargo run --release -p mmkit-bench --example fresh_pages -- [DIR] [MIB]`
//!
//! Prints microseconds per page for four rounds of anonymous memory
//! (each round unmaps the last, so later rounds may get back pages the
//! guest already has), then for a file in `DIR` (default `.`) grown
//! with `ftruncate` (a sparse file) and with `fallocate` (blocks reserved).

use std::fs::OpenOptions;
use std::time::Instant;

use memmap2::{MmapMut, MmapOptions};

#[path = "../src/machine.rs"]
mod machine;

const PAGE: usize = 4096;

/// Writes one byte per page and returns microseconds per page.
fn touch(map: &mut MmapMut) -> f64 {
    let t = Instant::now();
    for i in (0..map.len()).step_by(PAGE) {
        map[i] = 1;
    }
    t.elapsed().as_secs_f64() * 1e6 / (map.len() / PAGE) as f64
}

fn file_round(dir: &std::path::Path, bytes: usize, reserve: bool) -> std::io::Result<f64> {
    let tmp = tempfile::Builder::new().prefix(".fresh-pages").tempfile_in(dir)?;
    let file = OpenOptions::new().read(true).write(true).open(tmp.path())?;
    if reserve {
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes as u64)?;
    } else {
        file.set_len(bytes as u64)?;
    }
    // SAFETY: the file is a fresh temporary file that only this process
    // knows of; nothing truncates it while it is mapped.
    let mut map = unsafe { MmapOptions::new().len(bytes).map_mut(&file)? };
    Ok(touch(&mut map))
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).map_or(".", String::as_str));
    let mib: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let bytes = mib << 20;
    machine::print_header(false);
    for round in 1..=4 {
        let mut map = MmapOptions::new().len(bytes).map_anon()?;
        println!("anonymous, round {round}: {:.2} µs per 4 KiB page", touch(&mut map));
    }
    for reserve in [false, true] {
        let how = if reserve { "fallocate" } else { "ftruncate" };
        println!(
            "file in {}, {how}: {:.2} µs per 4 KiB page",
            dir.display(),
            file_round(&dir, bytes, reserve)?
        );
    }
    Ok(())
}
