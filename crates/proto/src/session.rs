//! The index session as a pure state machine: join, heartbeat, back-off.
