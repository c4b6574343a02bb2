//! What the benchmarks read from `/proc` (Linux): a process's resident memory and CPU time,
//! the machine's stolen CPU time, and this process's open-file limit.

use std::path::PathBuf;

/// Clock ticks per second in `/proc/*/stat` (`USER_HZ`, 100 on every Linux ABI we run on).
const USER_HZ: f64 = 100.0;

fn proc_dir(pid: Option<u32>) -> PathBuf {
    pid.map_or_else(
        || PathBuf::from("/proc/self"),
        |p| PathBuf::from(format!("/proc/{p}")),
    )
}

/// `VmRSS` of a process in KiB (`None`: no such process, or not Linux).
#[must_use]
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(proc_dir(Some(pid)).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// User + system CPU seconds a process (or this one, with `None`) has used so far.
#[must_use]
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    stat_cpu_seconds(&proc_dir(pid).join("stat"))
}

/// User + system CPU seconds of the first thread of a process named `name` (its `comm`,
/// e.g. the server's `warbler-writer`).
#[must_use]
pub fn thread_cpu_seconds(pid: u32, name: &str) -> Option<f64> {
    let tasks = std::fs::read_dir(proc_dir(Some(pid)).join("task")).ok()?;
    tasks.flatten().find_map(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        (comm.trim_end() == name).then(|| stat_cpu_seconds(&task.path().join("stat")))?
    })
}

fn stat_cpu_seconds(path: &std::path::Path) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    #[allow(clippy::cast_precision_loss)] // tick counts stay far below 2^52
    Some((utime + stime) as f64 / USER_HZ)
}

/// The machine's CPU time so far, in ticks of all CPUs: (total, stolen). Stolen time is
/// what a virtual machine's CPUs were ready to run but the hypervisor ran someone else
/// (`steal` in `/proc/stat`); on a shared host it comes in bursts that stall every thread,
/// so the benchmarks report it next to their latencies.
#[must_use]
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is counted in user).
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    Some((ticks.iter().sum(), *ticks.get(7)?))
}

/// Percent of the machine's CPU time stolen between two [`machine_ticks`] readings.
#[must_use]
pub fn steal_pct(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.0.checked_sub(before.0).filter(|t| *t > 0)?;
    let stolen = after.1.checked_sub(before.1)?;
    #[allow(clippy::cast_precision_loss)] // tick counts stay far below 2^52
    Some((stolen as f64 * 1000.0 / total as f64).round() / 10.0)
}

/// This process's soft limit on open files (`ulimit -n`), if it can be read.
#[must_use]
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Number of files this process has open now.
#[must_use]
pub fn open_files() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(vm_rss_kib(pid).is_some_and(|k| k > 0));
        assert!(cpu_seconds(None).is_some());
        assert!(cpu_seconds(Some(pid)).is_some());
        let me = std::fs::read_to_string("/proc/thread-self/comm").expect("comm");
        assert!(thread_cpu_seconds(pid, me.trim_end()).is_some());
        assert!(thread_cpu_seconds(pid, "no-such-thread").is_none());
        assert!(open_files_limit().is_some_and(|n| n > 0));
        assert!(open_files().is_some_and(|n| n > 0));
        let (total, stolen) = machine_ticks().expect("/proc/stat");
        assert!(total > 0 && stolen <= total);
        assert_eq!(steal_pct((100, 10), (300, 15)), Some(2.5));
        assert_eq!(steal_pct((100, 10), (100, 10)), None);
    }
}
