//! A throw-away `redis-server` for tests: on `127.0.0.1`, at a free port, without persistence, in a
//! temporary directory; killed when dropped.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed (and its directory removed) when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server, or returns `None` when `redis-server` is not installed (the caller skips
    /// its test). Under `CI=true` a missing server fails the test instead: CI installs it.
    pub fn start() -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !installed {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server is not installed (CI=true: the Redis tests must run)"
            );
            eprintln!("skipping: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        // The port is free when asked, but another process may take it before Redis binds it: retry.
        let mut last_error = String::new();
        for _ in 0..5 {
            match Self::try_start() {
                Ok(server) => return Some(server),
                Err(error) => last_error = error,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    fn try_start() -> Result<Self, String> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir =
            std::env::temp_dir().join(format!("token-mgmt-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("temporary directory: {e}"))?;
        let child = Self::spawn(port, &dir)?;
        let mut server = Self { child, port, dir };
        server.wait_ready()?;
        Ok(server)
    }

    fn spawn(port: u16, dir: &Path) -> Result<Child, String> {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))
    }

    /// Waits until the server accepts connections (it binds before serving, within milliseconds).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}"));
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        Err("not accepting connections after 10 s".to_owned())
    }

    /// Starts the server again after [`kill`](Self::kill), on the same port (empty: nothing is saved).
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port, &self.dir).expect("redis-server restarts");
        self.wait_ready().expect("redis-server restarts");
    }

    /// The server's address, `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain connection, for a test to read or change what the cache stored.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("a valid Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("redis-server accepts connections")
    }

    /// Stops the server's process (`SIGSTOP`): connections stay open, nothing is answered (a Redis
    /// that hangs), until [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a [frozen](Self::freeze) server run again (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with the pid of our own child process and a valid signal number.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({pid}, {signal}) failed");
    }

    /// Kills the server now (an outage), and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
