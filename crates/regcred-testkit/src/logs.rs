//! Component logs, printed when a test fails: the API server's or the controller manager's
//! complaint is usually the explanation.

use std::path::Path;

use crate::TestBed;

/// How many lines of each log [`TestBed::dump_logs`] prints.
const DUMP_LINES: usize = 40;

impl TestBed {
    /// Prints the last lines of every component log, and of `testbed up`'s own messages,
    /// to stderr (which the test harness shows for a failed test).
    pub fn dump_logs(&self) {
        if let Some(status) = self.exit_status() {
            eprintln!("==== the test bed is down: testbed up exited ({status})");
        }
        let mut logs: Vec<_> = std::fs::read_dir(&self.info.log_dir)
            .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        logs.sort();
        logs.push(self.stderr_log.clone());
        for log in logs {
            eprintln!("==== last {DUMP_LINES} lines of {}", log.display());
            eprintln!("{}", tail(&log, DUMP_LINES));
        }
    }

    /// A guard that calls [`TestBed::dump_logs`] if it is dropped while the test panics:
    /// `let _dump = bed.dump_on_panic();` at the top of a test.
    pub fn dump_on_panic(&'static self) -> FailureDump {
        FailureDump { bed: self }
    }
}

/// Prints the component logs when dropped during a panic; see [`TestBed::dump_on_panic`].
#[must_use = "the logs are printed when the guard is dropped: bind it with `let _dump = ...`"]
pub struct FailureDump {
    bed: &'static TestBed,
}

impl Drop for FailureDump {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.bed.dump_logs();
        }
    }
}

/// The last `n` lines of a text file, or a note saying why there are none.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}
