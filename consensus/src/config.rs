//! openraft configuration.

use openraft::{Config, ConfigError, SnapshotPolicy};

pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
pub const DEFAULT_ELECTION_MIN_MS: u64 = 800;
pub const DEFAULT_ELECTION_MAX_MS: u64 = 1600;

/// Entries applied between two snapshots.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;
/// Log entries kept below the last snapshot, so a follower that fell
/// briefly behind (e.g. restarted) catches up from the log rather than
/// needing the whole snapshot.
pub const LOG_KEPT_AFTER_SNAPSHOT: u64 = 5_000;

/// The Raft configuration for the given timings (milliseconds). Fails if
/// they are inconsistent (e.g. heartbeat not below the election timeout).
pub fn raft_config(
    heartbeat_ms: u64,
    election_min_ms: u64,
    election_max_ms: u64,
) -> Result<Config, ConfigError> {
    Config {
        cluster_name: "charter".to_string(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: election_min_ms,
        election_timeout_max: election_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: LOG_KEPT_AFTER_SNAPSHOT,
        // Chunks are base64 in JSON; 1 MiB keeps one request well within
        // the per-chunk timeout below.
        snapshot_max_chunk_size: 1024 * 1024,
        // Per chunk: receiving, and on the last chunk installing, a
        // snapshot takes longer than an append.
        install_snapshot_timeout: 5_000,
        ..Config::default()
    }
    .validate()
}

/// [`raft_config`] with the default timings.
pub fn default_raft_config() -> Result<Config, ConfigError> {
    raft_config(
        DEFAULT_HEARTBEAT_MS,
        DEFAULT_ELECTION_MIN_MS,
        DEFAULT_ELECTION_MAX_MS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_timings_do_not() {
        let c = default_raft_config().unwrap();
        assert_eq!(c.heartbeat_interval, DEFAULT_HEARTBEAT_MS);
        assert!(
            raft_config(100, 50, 60).is_err(),
            "heartbeat above election timeout"
        );
        assert!(raft_config(100, 900, 800).is_err(), "min above max");
    }
}
