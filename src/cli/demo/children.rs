//! The demo's child processes: the same `meshlens` binary running `serve`, `proxy sidecar` and `proxy
//! ingress`, so the demo exercises the real command-line paths.
//!
//! Each child runs in its own process group, so a Ctrl-C in the terminal reaches only the demo, which then
//! stops the children in order (traffic first, the collector last) instead of all at once. Each child's
//! stderr is copied to a file in the demo's log directory; a child is ready when a line it prints once its
//! listeners are bound appears there. Dropping a [`Child`] kills the process, so an error path leaves no
//! process behind.

use anyhow::{Context, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::oneshot;

/// How long a child may take to bind its listeners. Generous: on a loaded machine the first start of a
/// debug build is slow.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running child process.
pub struct Child {
    pub name: String,
    process: tokio::process::Child,
    /// Where its stderr goes.
    pub log: PathBuf,
    stderr_copied: Option<tokio::task::JoinHandle<()>>,
}

/// Runs `meshlens ARGS` to completion; its stderr becomes the error when it fails.
pub async fn run(args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let output = Command::new(current_exe()?).args(args).stdin(Stdio::null()).output().await?;
    if !output.status.success() {
        bail!("`meshlens {}` failed: {}", display(args), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Starts `meshlens ARGS` as `name` and waits until a line of its stderr satisfies `ready`, returning
/// that line with the child.
pub async fn spawn(
    name: &str,
    args: &[&std::ffi::OsStr],
    log_dir: &Path,
    ready: impl Fn(&str) -> bool + Send + 'static,
) -> anyhow::Result<(Child, String)> {
    let log = log_dir.join(format!("{name}.stderr.log"));
    let mut command = Command::new(current_exe()?);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    command.as_std_mut().process_group(0);
    let mut process = command.spawn().with_context(|| format!("starting {name}: meshlens {}", display(args)))?;
    let stderr = process.stderr.take().context("no stderr pipe")?;
    let mut file = tokio::fs::File::create(&log).await.with_context(|| format!("creating {}", log.display()))?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let stderr_copied = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut ready_tx = Some(ready_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            // The log file is for the user to read; failing to write it must not stop the child's pipe.
            let _ = file.write_all(format!("{line}\n").as_bytes()).await;
            if ready_tx.is_some() && ready(&line) {
                let _ = file.flush().await;
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(line);
                }
            }
        }
        let _ = file.flush().await;
    });
    let mut child = Child { name: name.to_owned(), process, log, stderr_copied: Some(stderr_copied) };
    match tokio::time::timeout(READY_TIMEOUT, ready_rx).await {
        Ok(Ok(line)) => Ok((child, line)),
        Ok(Err(_)) => {
            // The pipe closed before the line: the child exited. Its stderr says why.
            let status = child.process.wait().await.ok();
            if let Some(copied) = child.stderr_copied.take() {
                let _ = copied.await;
            }
            let tail = tail(&child.log);
            bail!("{name} exited during start-up ({}):\n{tail}", status.map_or("?".to_owned(), |s| s.to_string()))
        }
        Err(_) => bail!("{name} did not get ready in {READY_TIMEOUT:?}; see {}", child.log.display()),
    }
}

impl Child {
    /// Asks the child to stop (SIGTERM), waits for it, and kills it if it takes too long. Returns whether
    /// it exited cleanly.
    pub async fn stop(mut self) -> bool {
        let clean = match self.process.id() {
            Some(pid) => {
                let pid = rustix::process::Pid::from_raw(pid as i32);
                let signalled =
                    pid.is_some_and(|pid| rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok());
                match tokio::time::timeout(STOP_TIMEOUT, self.process.wait()).await {
                    Ok(Ok(status)) => signalled && status.success(),
                    _ => {
                        tracing::warn!(child = %self.name, "did not stop in {STOP_TIMEOUT:?} after SIGTERM; killing it");
                        let _ = self.process.kill().await;
                        false
                    }
                }
            }
            // Already reaped: it exited on its own, which is not a clean stop.
            None => false,
        };
        if let Some(copied) = self.stderr_copied.take() {
            let _ = copied.await;
        }
        clean
    }

    /// Whether the child has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.try_wait().ok().flatten()
    }

    /// Kills the child at once (the second Ctrl-C).
    pub async fn kill(mut self) {
        let _ = self.process.kill().await;
    }
}

fn current_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding the meshlens executable")
}

fn display(args: &[&std::ffi::OsStr]) -> String {
    args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}

/// The last lines of a log file, for an error message.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
