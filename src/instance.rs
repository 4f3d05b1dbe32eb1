//! Who this process is, for audit trails and alerts: host and process id.

/// The host's name, from the kernel (no extra crate for one file read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// `host:pid`, distinct for every running instance.
pub fn instance_id() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// The person at a command line: `user@host`.
pub fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown-user".into());
    format!("{user}@{}", hostname())
}
