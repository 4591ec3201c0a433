//! The machine a suite ran on, printed at the head of every suite and put
//! in its JSON: results from different CPUs differ by up to 3× on
//! cross-core work, so no figure is quoted without its machine.

use serde::Serialize;

/// CPU model, core count and kernel of this machine.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `lscpu`'s "Model name" (from `/proc/cpuinfo`).
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// Kernel release (`uname -r`).
    pub kernel: String,
}

impl Machine {
    /// Reads this machine's description.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let kernel = rustix::system::uname().release().to_string_lossy().into_owned();
        Machine { cpu, cores, kernel }
    }

    /// One line for the head of a suite's output.
    pub fn line(&self) -> String {
        format!("Machine: {}, {} cores, Linux {}", self.cpu, self.cores, self.kernel)
    }
}

/// Prints the machine line: on stdout, or on stderr when stdout carries JSON.
pub fn print_header(json: bool) -> Machine {
    let m = Machine::detect();
    if json {
        eprintln!("{}", m.line());
    } else {
        println!("{}", m.line());
    }
    m
}
