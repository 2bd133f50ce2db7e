//! Log output captured from a `tracing` fmt subscriber, to assert on what was logged.

use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;

/// The text logged while the guard of [`CapturedLogs::capture`] lives (this thread only).
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Captures the events at `level` and above on this thread, without colours, until the
    /// returned guard is dropped.
    pub fn capture(level: tracing::Level) -> (Self, DefaultGuard) {
        let logs = Self::default();
        let subscriber = logs.subscriber(level);
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// Captures the events at `level` and above on every thread, for the rest of the process: the
    /// process's global subscriber, set by the first call (later calls return the same capture).
    /// For a test whose events may be emitted while other tests of its binary run: a thread's own
    /// subscriber ([`capture`](Self::capture)) can miss events whose callsites another thread
    /// registered first. Tell a test's events apart by something only it logs (a client name).
    pub fn capture_global(level: tracing::Level) -> &'static Self {
        static GLOBAL: std::sync::OnceLock<CapturedLogs> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(|| {
            let logs = Self::default();
            tracing::subscriber::set_global_default(logs.subscriber(level))
                .expect("no other global subscriber in this test binary");
            logs
        })
    }

    /// A fmt subscriber writing the events at `level` and above here, without colours.
    fn subscriber(&self, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(level)
            .finish()
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}
