//! Who gets answered: the chat policy between the relays and the persona. Input: every
//! [`ChatMessage`] the relays read ([`ChatPolicy::offer`]). Output: the next message to answer when
//! the idol is free ([`ChatPolicy::next`]), or nothing.
//!
//! Rules, in the order a message meets them:
//!
//! 1. **Empty** text (after trimming) is refused.
//! 2. **De-duplication**: a message whose platform id was seen among the last
//!    [`PolicyConfig::dedup`] ids is refused (a relay that reconnects may be sent recent messages
//!    again; a bot may post twice).
//! 3. **Priority**: paid messages (bits, gifts, super chats) first, then messages that mention the
//!    idol by one of [`PolicyConfig::names`] (a whole word, any case, `@` allowed), then the rest.
//! 4. **Rate limits**: a token bucket per viewer and one for the whole chat (the persona's
//!    [`RateLimiter`]). Paid messages pass both: they were paid for. A refusal says when the next
//!    message is accepted.
//! 5. **Bounded queue, drop-oldest**: at most [`PolicyConfig::queue`] messages wait. When full, the
//!    oldest message of the lowest priority present (the newcomer included) is dropped, so a flood of
//!    plain chat never pushes out a paid message.
//!
//! When the idol is free, [`ChatPolicy::next`] drops plain messages older than
//! [`PolicyConfig::max_age`] (stale), then takes the oldest message of the highest priority. In a
//! **busy** chat (at least [`PolicyConfig::busy_at`] plain messages waiting), a plain pick is one of
//! them at random (seeded) and the other plain ones are let go: she answers one of N, as a streamer
//! reading a fast chat does, instead of working through a backlog that is minutes old.
//!
//! Every decision is returned to the caller (the desk logs each one and counts them for `/metrics`).
//! Time is passed in, so the policy is deterministic.

use super::ChatMessage;
use crate::persona::guard::{RateLimit, RateLimiter, Rejection};
use rand::{Rng, SeedableRng};
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// The policy's settings (`[relays]` in idol.toml).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// Per viewer: messages accepted at once, then per minute.
    pub user: RateLimit,
    /// The whole chat: messages accepted at once, then per minute.
    pub global: RateLimit,
    /// Most messages waiting for an answer.
    pub queue: usize,
    /// The idol's names: a message naming her is a mention (priority over plain chat).
    pub names: Vec<String>,
    /// Plain messages waiting at which the chat counts as busy (answer one of them, let the others
    /// go); 0 turns the mode off.
    pub busy_at: usize,
    /// Plain messages older than this when the idol is free are dropped as stale.
    pub max_age: Duration,
    /// How many recent message ids are remembered for de-duplication.
    pub dedup: usize,
    /// Seed of the one-of-N choice.
    pub seed: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            user: RateLimit {
                burst: 2,
                per_minute: 3.0,
            },
            global: RateLimit {
                burst: 20,
                per_minute: 120.0,
            },
            queue: 32,
            names: vec![],
            busy_at: 8,
            max_age: Duration::from_secs(60),
            dedup: 4096,
            seed: 0,
        }
    }
}

/// How much a message matters to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Plain,
    Mention,
    Paid,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Plain => "plain",
            Priority::Mention => "mention",
            Priority::Paid => "paid",
        }
    }
}

/// What [`ChatPolicy::offer`] did with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Waiting for an answer.
    Queued(Priority),
    Empty,
    /// Its id was seen recently.
    Duplicate,
    /// The viewer's bucket is empty (the persona guard's message, with the wait).
    UserLimited(String),
    /// The whole chat's bucket is empty.
    GlobalLimited(String),
    /// The queue was full and the newcomer was the one dropped.
    Dropped,
}

impl Verdict {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Queued(_) => "queued",
            Verdict::Empty => "empty",
            Verdict::Duplicate => "duplicate",
            Verdict::UserLimited(_) => "user_limited",
            Verdict::GlobalLimited(_) => "global_limited",
            Verdict::Dropped => "dropped_full",
        }
    }
}

/// The result of an offer: the verdict on the message, and an older message the queue dropped to
/// make room for it (drop-oldest), if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Offered {
    pub verdict: Verdict,
    pub displaced: Option<ChatMessage>,
}

/// The message to answer now, and what was let go on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    pub msg: ChatMessage,
    pub priority: Priority,
    /// Plain messages older than `max_age`, dropped.
    pub stale: Vec<ChatMessage>,
    /// In a busy chat: the other plain messages, let go (`msg` was one of `skipped.len() + 1`).
    pub skipped: Vec<ChatMessage>,
}

#[derive(Debug, Clone)]
struct Waiting {
    msg: ChatMessage,
    priority: Priority,
    at: Instant,
}

/// The policy's state. See the module docs.
#[derive(Debug)]
pub struct ChatPolicy {
    cfg: PolicyConfig,
    users: RateLimiter,
    global: RateLimiter,
    queue: VecDeque<Waiting>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    names: Vec<String>,
    rng: rand_chacha::ChaCha8Rng,
}

impl ChatPolicy {
    pub fn new(cfg: PolicyConfig) -> Self {
        let names = cfg
            .names
            .iter()
            .map(|n| n.trim().to_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
        ChatPolicy {
            users: RateLimiter::new(cfg.user),
            global: RateLimiter::new(cfg.global),
            queue: VecDeque::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            names,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The priority `msg` would get.
    pub fn priority(&self, msg: &ChatMessage) -> Priority {
        if msg.paid.is_some() {
            Priority::Paid
        } else if self.mentions(&msg.text) {
            Priority::Mention
        } else {
            Priority::Plain
        }
    }

    /// Whether `text` names the idol: one of the names as whole words (letters and digits around
    /// it are not part of it), any case.
    pub fn mentions(&self, text: &str) -> bool {
        let lower = text.to_lowercase();
        self.names.iter().any(|name| {
            lower.match_indices(name.as_str()).any(|(i, m)| {
                let before = lower[..i].chars().next_back();
                let after = lower[i + m.len()..].chars().next();
                !before.is_some_and(char::is_alphanumeric)
                    && !after.is_some_and(char::is_alphanumeric)
            })
        })
    }

    fn remember(&mut self, key: String) -> bool {
        if self.seen.contains(&key) {
            return false;
        }
        if self.cfg.dedup == 0 {
            return true;
        }
        while self.seen_order.len() >= self.cfg.dedup {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(key.clone());
        self.seen_order.push_back(key);
        true
    }

    /// Take a message from a relay at time `now`.
    pub fn offer(&mut self, msg: ChatMessage, now: Instant) -> Offered {
        let refused = |verdict| Offered {
            verdict,
            displaced: None,
        };
        if msg.text.trim().is_empty() {
            return refused(Verdict::Empty);
        }
        if let Some(key) = msg.dedup_key()
            && !self.remember(key)
        {
            return refused(Verdict::Duplicate);
        }
        let priority = self.priority(&msg);
        if priority != Priority::Paid {
            if let Err(r) = self.users.check(&msg.user_key(), now) {
                return refused(Verdict::UserLimited(describe(r)));
            }
            if let Err(r) = self.global.check("*", now) {
                let why = match r {
                    Rejection::RateLimited { retry_after, .. } => format!(
                        "the chat is over its limit of {} messages a minute; the next is accepted in {:.1} s",
                        self.cfg.global.per_minute,
                        retry_after.as_secs_f64()
                    ),
                    other => other.to_string(),
                };
                return refused(Verdict::GlobalLimited(why));
            }
        }
        let waiting = Waiting {
            msg,
            priority,
            at: now,
        };
        if self.queue.len() < self.cfg.queue.max(1) {
            self.queue.push_back(waiting);
            return refused(Verdict::Queued(priority));
        }
        // Full: drop the oldest of the lowest priority present, the newcomer included (it is the
        // youngest, so it goes only when its priority is below every waiting message's).
        let lowest = self.queue.iter().map(|w| w.priority).min();
        match lowest {
            Some(low) if low <= priority => {
                let i = self
                    .queue
                    .iter()
                    .position(|w| w.priority == low)
                    .expect("the lowest priority is present");
                let old = self.queue.remove(i).map(|w| w.msg);
                self.queue.push_back(waiting);
                Offered {
                    verdict: Verdict::Queued(priority),
                    displaced: old,
                }
            }
            _ => refused(Verdict::Dropped),
        }
    }

    /// The message to answer now (the idol is free), or `None` when nothing waits.
    pub fn next(&mut self, now: Instant) -> Option<Pick> {
        let max_age = self.cfg.max_age;
        let mut stale = vec![];
        self.queue.retain(|w| {
            let old =
                w.priority == Priority::Plain && now.saturating_duration_since(w.at) > max_age;
            if old {
                stale.push(w.msg.clone());
            }
            !old
        });
        let top = self.queue.iter().map(|w| w.priority).max()?;
        let plain = self
            .queue
            .iter()
            .filter(|w| w.priority == Priority::Plain)
            .count();
        let mut skipped = vec![];
        let i = if top == Priority::Plain && self.cfg.busy_at > 0 && plain >= self.cfg.busy_at {
            let chosen = self.rng.random_range(0..plain);
            let mut kept = VecDeque::new();
            let mut k = 0;
            let mut pos = 0;
            for w in self.queue.drain(..) {
                if w.priority == Priority::Plain {
                    if k == chosen {
                        pos = kept.len();
                        kept.push_back(w);
                    } else {
                        skipped.push(w.msg);
                    }
                    k += 1;
                } else {
                    kept.push_back(w);
                }
            }
            self.queue = kept;
            pos
        } else {
            self.queue
                .iter()
                .position(|w| w.priority == top)
                .expect("the top priority is present")
        };
        let w = self.queue.remove(i).expect("index in the queue");
        Some(Pick {
            msg: w.msg,
            priority: w.priority,
            stale,
            skipped,
        })
    }
}

fn describe(r: Rejection) -> String {
    r.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{Paid, PaidKind, Platform};

    fn msg(user: &str, text: &str) -> ChatMessage {
        ChatMessage::new(Platform::Twitch, "twitch", user, text)
    }

    fn with_id(mut m: ChatMessage, id: &str) -> ChatMessage {
        m.id = Some(id.into());
        m
    }

    fn paid(mut m: ChatMessage) -> ChatMessage {
        m.paid = Some(Paid {
            kind: PaidKind::Bits,
            amount: 100.0,
            unit: "bits".into(),
        });
        m
    }

    fn open() -> PolicyConfig {
        PolicyConfig {
            user: RateLimit {
                burst: 1000,
                per_minute: 1000.0,
            },
            global: RateLimit {
                burst: 1000,
                per_minute: 1000.0,
            },
            names: vec!["Mika".into()],
            ..PolicyConfig::default()
        }
    }

    #[test]
    fn duplicates_by_platform_id_are_refused_and_ids_are_forgotten_in_order() {
        let t = Instant::now();
        let mut p = ChatPolicy::new(PolicyConfig { dedup: 2, ..open() });
        assert_eq!(
            p.offer(with_id(msg("a", "hi"), "1"), t).verdict,
            Verdict::Queued(Priority::Plain)
        );
        assert_eq!(
            p.offer(with_id(msg("b", "hi again"), "1"), t).verdict,
            Verdict::Duplicate
        );
        // Another platform's id 1 is another message.
        let mut other = with_id(msg("a", "hi"), "1");
        other.platform = Platform::Bilibili;
        assert_eq!(p.offer(other, t).verdict.label(), "queued");
        // Past the memory, id 1 is forgotten.
        p.offer(with_id(msg("c", "x"), "2"), t);
        p.offer(with_id(msg("c", "y"), "3"), t);
        assert_eq!(
            p.offer(with_id(msg("c", "z"), "1"), t).verdict.label(),
            "queued"
        );
        // Messages without ids are never duplicates.
        assert_eq!(p.offer(msg("c", "z"), t).verdict.label(), "queued");
        assert_eq!(p.offer(msg("c", "z"), t).verdict.label(), "queued");
        assert_eq!(p.offer(msg("c", "   "), t).verdict, Verdict::Empty);
    }

    #[test]
    fn per_user_and_global_limits_refuse_with_the_wait_and_paid_messages_pass() {
        let t = Instant::now();
        let mut p = ChatPolicy::new(PolicyConfig {
            user: RateLimit {
                burst: 2,
                per_minute: 6.0,
            },
            global: RateLimit {
                burst: 3,
                per_minute: 60.0,
            },
            ..open()
        });
        assert_eq!(p.offer(msg("ann", "1"), t).verdict.label(), "queued");
        assert_eq!(p.offer(msg("ANN", "2"), t).verdict.label(), "queued");
        let Verdict::UserLimited(why) = p.offer(msg("ann", "3"), t).verdict else {
            panic!("ann is over her limit");
        };
        assert!(why.contains("accepted in 10.0 s"), "{why}");
        // A user id keys the bucket when there is one: a new name with the same id is the same viewer.
        let mut renamed = msg("ann2", "4");
        renamed.user_id = Some("7".into());
        assert_eq!(p.offer(renamed, t).verdict.label(), "queued");
        let Verdict::GlobalLimited(why) = p.offer(msg("bob", "5"), t).verdict else {
            panic!("the chat is over its limit");
        };
        assert!(why.contains("accepted in 1.0 s"), "{why}");
        // Paid messages pass both limits.
        assert_eq!(
            p.offer(paid(msg("ann", "6")), t).verdict,
            Verdict::Queued(Priority::Paid)
        );
        // Refills with time.
        let later = t + Duration::from_secs(10);
        assert_eq!(p.offer(msg("ann", "7"), later).verdict.label(), "queued");
    }

    #[test]
    fn mentions_are_whole_words_in_any_case() {
        let p = ChatPolicy::new(PolicyConfig {
            names: vec!["Mika".into(), "ミカ".into()],
            ..open()
        });
        assert!(p.mentions("hi @mika!"));
        assert!(p.mentions("MIKA, sing"));
        assert!(p.mentions("ミカ ちゃん"));
        assert!(!p.mentions("mikado is a game"));
        assert!(!p.mentions("tamika"));
        assert_eq!(p.priority(&msg("a", "hey Mika")), Priority::Mention);
        assert_eq!(p.priority(&paid(msg("a", "hey"))), Priority::Paid);
    }

    #[test]
    fn paid_then_mentions_then_oldest_first() {
        let t = Instant::now();
        let mut p = ChatPolicy::new(PolicyConfig {
            busy_at: 0,
            ..open()
        });
        p.offer(msg("a", "first"), t);
        p.offer(msg("b", "mika, hi"), t);
        p.offer(msg("c", "second"), t);
        p.offer(paid(msg("d", "take my bits")), t);
        let order: Vec<String> = std::iter::from_fn(|| p.next(t).map(|k| k.msg.text)).collect();
        assert_eq!(order, ["take my bits", "mika, hi", "first", "second"]);
        assert!(p.next(t).is_none());
    }

    #[test]
    fn a_full_queue_drops_the_oldest_of_the_lowest_priority_never_a_paid_one_for_chat() {
        let t = Instant::now();
        let mut p = ChatPolicy::new(PolicyConfig {
            queue: 3,
            busy_at: 0,
            ..open()
        });
        p.offer(msg("a", "plain 1"), t);
        p.offer(paid(msg("b", "paid 1")), t);
        p.offer(msg("c", "plain 2"), t);
        let o = p.offer(msg("d", "plain 3"), t);
        assert_eq!(o.verdict, Verdict::Queued(Priority::Plain));
        assert_eq!(o.displaced.unwrap().text, "plain 1");
        let o = p.offer(paid(msg("e", "paid 2")), t);
        assert_eq!(o.displaced.unwrap().text, "plain 2");
        let o = p.offer(paid(msg("f", "paid 3")), t);
        assert_eq!(o.displaced.unwrap().text, "plain 3");
        // Full of paid messages: plain chat is the one dropped.
        assert_eq!(p.offer(msg("g", "plain 4"), t).verdict, Verdict::Dropped);
        assert_eq!(p.len(), 3);
        // Paid messages displace the oldest paid one.
        let o = p.offer(paid(msg("h", "paid 4")), t);
        assert_eq!(o.displaced.unwrap().text, "paid 1");
    }

    #[test]
    fn stale_plain_messages_are_dropped_when_the_idol_is_free() {
        let t = Instant::now();
        let mut p = ChatPolicy::new(PolicyConfig {
            max_age: Duration::from_secs(30),
            busy_at: 0,
            ..open()
        });
        p.offer(msg("a", "old"), t);
        p.offer(msg("b", "old mika"), t);
        p.offer(msg("c", "new"), t + Duration::from_secs(20));
        let k = p.next(t + Duration::from_secs(40)).unwrap();
        // The mention is kept however old; the old plain message went stale.
        assert_eq!(k.msg.text, "old mika");
        assert_eq!(k.stale.len(), 1);
        assert_eq!(k.stale[0].text, "old");
        assert_eq!(p.next(t + Duration::from_secs(40)).unwrap().msg.text, "new");
    }

    #[test]
    fn a_busy_chat_answers_one_of_n_and_lets_the_rest_go_keeping_mentions() {
        let t = Instant::now();
        let mut p = ChatPolicy::new(PolicyConfig {
            busy_at: 5,
            seed: 3,
            ..open()
        });
        for i in 0..4 {
            p.offer(msg(&format!("u{i}"), &format!("m{i}")), t);
        }
        // Below the threshold: in order.
        assert_eq!(p.next(t).unwrap().msg.text, "m0");
        for i in 4..10 {
            p.offer(msg(&format!("u{i}"), &format!("m{i}")), t);
        }
        p.offer(msg("fan", "mika!"), t);
        // The mention first, not counted as chat to skip.
        let k = p.next(t).unwrap();
        assert_eq!((k.msg.text.as_str(), k.skipped.len()), ("mika!", 0));
        // Nine plain messages wait: one is answered, eight let go.
        let k = p.next(t).unwrap();
        assert_eq!(k.priority, Priority::Plain);
        assert_eq!(k.skipped.len(), 8);
        assert!(!k.skipped.iter().any(|s| s.text == k.msg.text));
        assert!(p.is_empty());
        // The choice is seeded: the same run picks the same message.
        let mut q = ChatPolicy::new(PolicyConfig {
            busy_at: 5,
            seed: 3,
            ..open()
        });
        for i in 0..4 {
            q.offer(msg(&format!("u{i}"), &format!("m{i}")), t);
        }
        q.next(t);
        for i in 4..10 {
            q.offer(msg(&format!("u{i}"), &format!("m{i}")), t);
        }
        q.offer(msg("fan", "mika!"), t);
        q.next(t);
        assert_eq!(q.next(t).unwrap().msg.text, k.msg.text);
    }
}
