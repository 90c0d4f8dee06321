//! Standard output for the commands. A reader that goes away early
//! (`assay findings | head -1`) ends the output, not the command: what
//! follows is dropped, and the command still finishes its work and cleans up
//! (runs stored, the embedded server stopped), where `println!` would panic.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether standard output can no longer be written.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `args` to standard output, unless it has been closed.
pub fn write(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("warning: cannot write to standard output any more: {e}");
        }
    }
}

/// `println!` to standard output through [`write`].
macro_rules! outln {
    () => {
        $crate::cli::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` to standard output through [`write`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*))
    };
}
