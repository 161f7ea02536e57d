//! Step-wise preallocation of the active segment (see the module docs of
//! [`super`]): an append that would pass the preallocated end extends it
//! first.

use crate::error::LogResult;

use super::PartitionLog;

impl PartitionLog {
    /// Grows the active segment's preallocation to the next step boundary
    /// when `next_batch_bytes` would pass its preallocated end. Best effort
    /// on a full disk (the append then extends the file itself, or fails
    /// cleanly); any other failure refuses the append, having written
    /// nothing (a failed `fallocate` leaves at most zeros past the logical
    /// end, which recovery skips). Caller holds the write gate, so the
    /// active segment cannot change across the await.
    pub(super) async fn extend_preallocation(&self, next_batch_bytes: usize) -> LogResult<()> {
        let (file, base, target) = {
            let state = self.state.borrow();
            let active = state.active();
            let config = state.config.segment_config();
            match active.preallocation_needed(next_batch_bytes as u64, &config) {
                Some(target) => (active.file().clone(), active.base(), target),
                None => return Ok(()),
            }
        };
        let reached = file.preallocate(target).await?;
        let mut state = self.state.borrow_mut();
        if state.active().base() == base {
            state.active_mut().note_preallocated(reached);
            state.debug_check_invariants();
        }
        Ok(())
    }
}
