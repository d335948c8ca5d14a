//! Turns kernel error numbers buried in an error chain into advice.

use std::io;

/// The first OS error number in `err`'s chain of causes.
pub fn errno(err: &anyhow::Error) -> Option<i32> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
}

/// A hint for errors an administrator can fix, appended to the message.
/// A denied `bpf()` call and a denied file operation look alike; the
/// chain's own words tell them apart.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    let about_bpf = err.chain().any(|cause| {
        let text = cause.to_string().to_lowercase();
        ["bpf", "map", "program", "pin", "attach"]
            .iter()
            .any(|word| text.contains(word))
    });
    match errno(err)? {
        libc::EPERM | libc::EACCES if about_bpf => Some(
            "BPF not permitted: run smtpgate as root, with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON \
             (a container needs them granted; kernel lockdown or a seccomp profile can also forbid BPF)",
        ),
        libc::EPERM | libc::EACCES => Some("permission denied: check the path's owner and mode"),
        _ => None,
    }
}
