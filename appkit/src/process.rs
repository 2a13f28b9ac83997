//! Process plumbing every binary and harness of the workspace shares: the tokio runtime
//! sized to a worker count, shutdown on Ctrl-C/SIGTERM, sending signals, and finding a
//! process's children in /proc. One way to do each, so services, sidecar, bench and tests
//! behave alike.

use std::io;

/// One worker: a current-thread runtime, the cheapest when a few busy processes share few
/// cores; more: a multi-thread runtime with that many workers. Either way with a timer
/// always set (see [`TIMER_KEEPER_PERIOD`]).
pub fn runtime(workers: usize) -> io::Result<tokio::runtime::Runtime> {
    let runtime = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    runtime.spawn(keep_a_timer_set());
    Ok(runtime)
}

/// How often the runtime's keeper timer fires.
///
/// tokio's timer driver wakes its runtime (a write to its eventfd, then one more
/// `epoll_wait` that returns at once) whenever a timer is set to go off before the
/// earliest one it knew of when it last parked, and always when it knew of none. Every
/// request here sets a deadline of seconds, so each request that finds no other in flight
/// (most of them, at a steady 1,000/s) paid those two syscalls. With a timer always due
/// within this period the driver always knows one earlier than any such deadline, and the
/// price is one wake-up per period.
pub const TIMER_KEEPER_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

async fn keep_a_timer_set() {
    let mut tick = tokio::time::interval(TIMER_KEEPER_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = ctrl_c.await;
        return;
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// The signals the workspace sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
    Kill,
    Stop,
    Cont,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Int => libc::SIGINT,
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
        }
    }
}

/// Sends `signal` to `pid`.
#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a wrong pid is an
    // error return, not undefined behaviour.
    let rc = unsafe { libc::kill(pid, signal.number()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a process `pid` exists (also one of another user's, which we may not signal).
#[allow(unsafe_code)]
pub fn is_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: as in `send_signal`; signal 0 checks existence and sends nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The user id this process runs as.
#[allow(unsafe_code)]
pub fn user_id() -> u32 {
    // SAFETY: getuid(2) takes nothing, always succeeds and touches no memory of ours.
    unsafe { libc::getuid() }
}

/// Clock ticks per second, the unit of the CPU times in /proc (100 when unknown).
#[allow(unsafe_code)]
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf(3) takes a constant name and touches no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Asks the kernel to write every dirty page to disk (sync(2)); returns when it is done.
#[allow(unsafe_code)]
pub fn sync_filesystems() {
    // SAFETY: sync(2) takes nothing, cannot fail and touches no memory of ours.
    unsafe { libc::sync() };
}

/// The processes whose parent is `parent` (e.g. the app a `sidecar run` started), from
/// /proc; empty where /proc cannot be read.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).and_then(|f| f.get(1)?.parse().ok()) == Some(parent))
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name: `[0]` state, `[1]` ppid,
/// `[11]` utime, `[12]` stime (clock ticks). `None` once the process is gone.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(fields_after_name(&stat)?.map(str::to_string).collect())
}

/// The user and system CPU seconds `pid` has used so far. `None` once it is gone.
pub fn cpu_times(pid: u32) -> Option<(f64, f64)> {
    let fields = stat_fields(pid)?;
    let seconds = |i: usize| Some(fields.get(i)?.parse::<f64>().ok()? / clock_ticks());
    Some((seconds(11)?, seconds(12)?))
}

/// When `pid` started, in clock ticks since boot (`/proc/<pid>/stat` field 22): with the
/// pid, it names one process, also after the pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The command name is parenthesised and may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn fields_after_name(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat.rsplit_once(')')?.1.split_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_start_after_the_command_name() {
        let fields = |stat| fields_after_name(stat).map(Iterator::collect::<Vec<_>>);
        assert_eq!(
            fields("42 (a) b) S 7 42 42 0"),
            Some(vec!["S", "7", "42", "42", "0"])
        );
        assert_eq!(fields("garbage"), None);
    }

    #[test]
    fn a_spawned_child_is_found_signalled_and_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(children_of(std::process::id()).contains(&pid));
        assert!(is_alive(pid));
        send_signal(pid, Signal::Kill).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed, not exited");
    }
}
