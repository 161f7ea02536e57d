//! Support for tests, benches and tools that need a shard executor without
//! a whole shard runtime.

use std::future::Future;

use glommio::{LocalExecutorBuilder, Placement};

use crate::constants::IO_MEMORY_BYTES_DEFAULT;

/// Runs `future` to completion on a fresh, unpinned glommio executor on the
/// current thread (with the locked-memory budget of a real shard).
pub fn run_on_executor<T: 'static>(future: impl Future<Output = T> + 'static) -> T {
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES_DEFAULT)
        .make();
    match executor {
        Ok(executor) => executor.run(future),
        Err(err) => panic!("cannot start a glommio executor: {err}"),
    }
}
