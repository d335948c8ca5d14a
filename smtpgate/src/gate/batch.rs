//! Reads a whole hash map a few thousand entries per system call
//! (BPF_MAP_LOOKUP_BATCH, Linux 5.6), where aya 0.14 offers only a walk of
//! two calls per entry: at a million grants, the sweep and `smtpgate list`
//! take milliseconds instead of seconds.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::maps::MapData;
use bytemuck::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries asked for per call. Any bucket of a hash map is far smaller, so
/// the kernel never refuses a call for want of room (ENOSPC).
const ENTRIES_PER_CALL: usize = 4096;

/// The `batch` member of the kernel's `union bpf_attr`. The kernel accepts
/// a shorter attribute than its own and takes the rest as zero.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Calls `each` with every entry of the hash map `map`. Entries added or
/// removed meanwhile may or may not be seen; the rest are seen once.
pub fn for_each_entry<K: Pod, V: Pod>(
    map: &MapData,
    mut each: impl FnMut(&K, &V),
) -> io::Result<()> {
    let info = map.info().map_err(io::Error::other)?;
    if (info.key_size() as usize, info.value_size() as usize) != (size_of::<K>(), size_of::<V>()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "map entries are not of the types asked for",
        ));
    }
    let mut keys = vec![K::zeroed(); ENTRIES_PER_CALL];
    let mut values = vec![V::zeroed(); ENTRIES_PER_CALL];
    // Where the last call stopped (a bucket index for hash maps), and
    // where the next one starts; the first call starts at the beginning.
    let (mut resume_at, mut stopped_at) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &resume_at as *const u64 as u64
            },
            out_batch: &mut stopped_at as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: ENTRIES_PER_CALL as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the attribute points at buffers of `count` keys and values
        // of the map's own types, and at two live batch tokens.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        // ENOENT ends the walk; its call may still have returned entries.
        let last = match rc {
            0 => false,
            _ => match io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ENOENT) => true,
                e => return Err(e),
            },
        };
        let returned = (attr.count as usize).min(ENTRIES_PER_CALL);
        for (key, value) in keys[..returned].iter().zip(&values[..returned]) {
            each(key, value);
        }
        if last {
            return Ok(());
        }
        resume_at = stopped_at;
        first = false;
    }
}
