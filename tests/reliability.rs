//! Proof under stress (issue 7): nothing lost, nothing duplicated, no panic, no way in.
//!
//! - `crash`: a load generator posts emails and webhooks to the real `lm-ingest serve` binary
//!   while it is killed with SIGKILL at random moments and restarted on the same store.
//! - `faults`: Lunch Money (the strict fake) fails, cuts, throttles and stalls inserts.
//! - `hostile`: over a hundred bad requests on every ingest route, with good traffic alongside.
//!
//! `cargo test --test reliability` runs everything at a small scale (part of `cargo test`, so CI
//! runs it); `LM_INGEST_RELIABILITY=large cargo test --release --test reliability -- --nocapture`
//! runs it at a large one. Each test prints a `RELIABILITY ...` line with its figures
//! (RELIABILITY.md records a large run).

mod support;

#[path = "reliability/child.rs"]
mod child;
#[path = "reliability/crash.rs"]
mod crash;
#[path = "reliability/faults.rs"]
mod faults;
#[path = "reliability/hostile.rs"]
mod hostile;

/// How hard each test pushes.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub name: &'static str,
    /// Messages the crash test posts, and SIGKILLs it sends meanwhile.
    pub crash_messages: usize,
    pub kills: usize,
    /// Transactions delivered through the faulty Lunch Money.
    pub fault_transactions: usize,
    /// Times the hostile corpus is sent (each time alongside good traffic).
    pub hostile_rounds: usize,
}

impl Scale {
    pub fn from_env() -> Scale {
        match std::env::var("LM_INGEST_RELIABILITY").as_deref() {
            Ok("large") => Scale {
                name: "large",
                crash_messages: 4000,
                kills: 20,
                fault_transactions: 2000,
                hostile_rounds: 5,
            },
            Ok("small") | Err(_) => Scale {
                name: "small",
                crash_messages: 160,
                kills: 3,
                fault_transactions: 150,
                hostile_rounds: 1,
            },
            Ok(other) => panic!("LM_INGEST_RELIABILITY={other:?}: expected \"small\" or \"large\""),
        }
    }
}
