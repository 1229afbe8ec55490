//! The broadcast protocol (docs/BROADCAST.md): one writer, subscribers that each see every
//! unit. No public types: [`crate::Subscriber`] and the writer drive it.
//!
//! - [`policy`]: backpressure or leaky, chosen per subscriber.
//! - [`seqlock`]: the reclaim limit (the lane's tail) and the unit count before it, published
//!   together.
//! - [`slots`]: subscriber slots: attach (with the count of units before the start), detach,
//!   the writer's scan of the pins, dead subscribers.
//! - [`reclaim`]: the writer's side: which units it may reuse, and the fence pair with leaky
//!   subscribers.
//! - [`units`]: the committed units between the tail and the head, from their records.
//! - [`take`]: a subscriber's side: taking units in order, lag, and ending units in any order
//!   with process-private bookkeeping.

pub(crate) mod policy;
pub(crate) mod reclaim;
pub(crate) mod seqlock;
pub(crate) mod slots;
pub(crate) mod take;
pub(crate) mod units;
