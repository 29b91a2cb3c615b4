//! The `approval-relay` binary. Thin: the command line and everything it runs are library code
//! (`approval_relay::cli`) that the tests drive too.

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: profiles under load showed a third of the relay's CPU in glibc's
/// allocator (consolidation and free-list walks) for the many small, short-lived allocations of gRPC and
/// Redis traffic, and glibc keeps freed watch memory instead of returning it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // As #[tokio::main] (a worker per core, every driver), plus the allocator's collection when a worker
    // has gone idle (see `idle_collect`).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(idle_collect::parking)
        .on_thread_unpark(idle_collect::unparked)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(approval_relay::cli::main(shutdown_signal())),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Lets mimalloc hand memory back once a worker is idle. mimalloc puts a block freed by a thread other
/// than its allocator's on that page's cross-thread list, and only the owning thread collects it, as a
/// side effect of allocating; once traffic stops (100,000 watch streams closed) the workers stop
/// allocating, and pages full of such blocks stayed resident: 463–863 MiB of ~1 GiB after 60 s in four of
/// seven load runs. A collection walks the whole heap (with 100,000 streams open, collecting once a second
/// on every park raised p99 create → push from 8.5 to 30 ms), so it runs only when the worker is idle: it
/// slept at least `IDLE` last time and at least `IDLE_SHARE` of the last window of `EVERY`, and at most
/// once per window. Under light traffic a request can still wait behind one collection.
mod idle_collect {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    /// A sleep this long means the worker had no traffic to serve.
    const IDLE: Duration = Duration::from_millis(50);
    /// The share of a window the worker must have slept (busy under 10% of it).
    const IDLE_SHARE: f64 = 0.9;
    /// The window over which idleness is judged; at most one collection per worker per window.
    const EVERY: Duration = Duration::from_secs(1);

    thread_local! {
        static PARKED_AT: Cell<Option<Instant>> = const { Cell::new(None) };
        static LAST_SLEEP: Cell<Duration> = const { Cell::new(Duration::ZERO) };
        static SLEPT: Cell<Duration> = const { Cell::new(Duration::ZERO) };
        static WINDOW_START: Cell<Option<Instant>> = const { Cell::new(None) };
    }

    /// A worker is about to sleep: when a window has passed, collect if the worker was idle in it.
    pub fn parking() {
        let now = Instant::now();
        PARKED_AT.set(Some(now));
        let start = *WINDOW_START.get().get_or_insert(now);
        let window = now - start;
        if window < EVERY {
            WINDOW_START.set(Some(start));
            return;
        }
        let idle = LAST_SLEEP.get() >= IDLE
            && SLEPT.get().as_secs_f64() >= IDLE_SHARE * window.as_secs_f64();
        WINDOW_START.set(Some(now));
        SLEPT.set(Duration::ZERO);
        if !idle {
            return;
        }
        // SAFETY: mi_collect takes no pointer and is thread-safe: it collects this thread's heap and, when
        // forced, abandoned pages and the process's arenas, from any thread using mimalloc (the global
        // allocator here, the same libmimalloc-sys build).
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_collect(true);
        }
    }

    /// A worker woke up: remember how long it slept, and for how long in all in this window.
    pub fn unparked() {
        if let Some(at) = PARKED_AT.get() {
            let slept = at.elapsed();
            LAST_SLEEP.set(slept);
            SLEPT.set(SLEPT.get() + slept);
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
