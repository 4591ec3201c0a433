//! A throwaway `nats-server -js` on 127.0.0.1, for tests, examples and
//! benchmarks: a random port, its store in a directory you give, killed on
//! drop. Debian's `nats-server` package provides the binary.

use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `nats-server` child process with JetStream enabled.
#[derive(Debug)]
pub struct LocalServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    config: Option<PathBuf>,
}

/// Where the binary is, if installed (`/usr/sbin` on Debian, else `PATH`).
pub fn binary() -> Option<PathBuf> {
    let fixed = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"];
    if let Some(p) = fixed.iter().map(Path::new).find(|p| p.exists()) {
        return Some(p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("nats-server")).find(|p| p.exists())
}

/// How long a server may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

impl LocalServer {
    /// Starts a server whose JetStream store and ports file live in `dir`
    /// (created if missing), on a port the server picks.
    pub fn start(dir: &Path) -> io::Result<LocalServer> {
        LocalServer::start_with_config(dir, "")
    }

    /// [`LocalServer::start`] with extra nats-server configuration (for
    /// example `max_payload: 8192`, or an `authorization { ... }` block).
    pub fn start_with_config(dir: &Path, config: &str) -> io::Result<LocalServer> {
        std::fs::create_dir_all(dir)?;
        let config = if config.is_empty() {
            None
        } else {
            let path = dir.join("nats-server.conf");
            std::fs::write(&path, config)?;
            Some(path)
        };
        let mut server = LocalServer { child: None, port: 0, dir: dir.to_path_buf(), config };
        server.spawn(None)?;
        Ok(server)
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL: no clean shutdown, as in a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port, with the same store.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn(Some(self.port))
    }

    fn spawn(&mut self, port: Option<u16>) -> io::Result<()> {
        let bin = binary().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "nats-server is not installed (apt-get install nats-server)",
            )
        })?;
        let ports_dir = self.dir.join("ports");
        std::fs::create_dir_all(&ports_dir)?;
        let mut cmd = Command::new(bin);
        if let Some(c) = &self.config {
            cmd.arg("-c").arg(c);
        }
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "--ports_file_dir"]).arg(&ports_dir);
        cmd.arg("-sd").arg(self.dir.join("store"));
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn()?;
        let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(p) = read_client_port(&ports_file) {
                self.port = p;
                // The ports file is written once the listeners are up.
                if TcpStream::connect(("127.0.0.1", p)).is_ok() {
                    let _ = std::fs::remove_file(&ports_file);
                    return Ok(());
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(io::Error::other(format!("nats-server exited at start ({status})")));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(io::Error::other("nats-server did not start listening within 20 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The client port in a nats-server ports file:
/// `{"nats": ["nats://127.0.0.1:4222"], ...}` (2.9; `"client"` in others).
fn read_client_port(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = v.get("nats").or_else(|| v.get("client"))?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
    }
}
