//! CPU affinity of the control core's thread.
//!
//! Here, not in `server.rs` (which starts the control core), because the
//! control core pins itself, at a moment only it knows: after its managed
//! `nats-server` child is running, so the child does not inherit the pin.

/// Pins the calling thread (the control core) to `cpu`; a failure is logged,
/// not fatal (containers may forbid it). Called once the managed nats-server
/// child is running, so the child does not inherit the pin.
#[allow(unsafe_code)] // sched_setaffinity
pub(super) fn pin_current_thread(cpu: usize) {
    // SAFETY: `cpu_set_t` is plain data; zeroed is its empty state, CPU_SET
    // writes within it (cpu is bounds-checked against CPU_SETSIZE first) and
    // sched_setaffinity only reads `size_of::<cpu_set_t>()` bytes of it.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return;
        }
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result != 0 {
        tracing::warn!(cpu, error = %std::io::Error::last_os_error(), "cannot pin the control core");
    }
}
