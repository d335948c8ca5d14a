//! Turns kernel error numbers buried in an error chain into advice.

use std::io;

/// The first OS error number in `err`'s chain of causes.
pub fn errno(err: &anyhow::Error) -> Option<i32> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
}

/// A hint for errors an administrator can fix, appended to the message.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    match errno(err)? {
        libc::EPERM | libc::EACCES => Some(
            "BPF not permitted: run smtpgate as root with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN \
             (a container needs them granted; kernel lockdown or a seccomp profile can also forbid BPF)",
        ),
        _ => None,
    }
}
