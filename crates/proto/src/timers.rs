//! The overlay's timers as a pure state machine: presence and re-referral.
