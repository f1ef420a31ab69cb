//! The distributed topology under test, run by `scripts/cluster`: the same
//! script an operator uses, so the suite exercises what is shipped. With
//! RabbitMQ it uses the machine's server (a vhost of the test's own); with
//! Redis the script starts a `redis-server` of the cluster's own, on a free
//! port, and stops it with the rest.

use crate::helpers::{free_port_block, Env, BIN, OPERATOR_TOKEN};
use std::path::PathBuf;
use std::process::Command;

/// Which broker carries the events.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Topology {
    RabbitMq,
    Redis,
}

/// How long a Redis stream entry stays pending with a consumer before
/// another claims it: short, so that a killed worker's entries are taken
/// over within the scenario, yet well above a batch's time under this load.
const REDIS_CLAIM_IDLE_MS: &str = "2000";

pub struct Cluster {
    pub port: u16,
    /// The cluster's own `redis-server`, with Redis as the broker.
    pub redis_port: Option<u16>,
    dir: PathBuf,
    database_url: String,
    broker_url: String,
}

impl Cluster {
    pub fn up(env: &Env, topology: Topology) -> Cluster {
        let mut cluster = Cluster {
            port: free_port_block(4),
            redis_port: (topology == Topology::Redis).then(|| free_port_block(0)),
            dir: env.dir.path().join("cluster"),
            database_url: env.database_url.clone(),
            broker_url: env.broker_url.clone(),
        };
        cluster.script(&["up"]);
        cluster.broker_url = cluster.script(&["broker-url"]).trim().to_owned();
        cluster
    }

    /// The URL of the broker the roles use.
    pub fn broker_url(&self) -> &str {
        &self.broker_url
    }

    pub fn script(&self, args: &[&str]) -> String {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut command = Command::new(format!("{root}/scripts/cluster"));
        if let Some(port) = self.redis_port {
            command
                .env("CLUSTER_BROKER", "redis")
                .env("CLUSTER_REDIS_PORT", port.to_string())
                .env("ORDERFLOW_REDIS_CLAIM_IDLE_MS", REDIS_CLAIM_IDLE_MS);
        }
        let out = command
            .args(args)
            .env("CLUSTER_DIR", &self.dir)
            .env("CLUSTER_PORT", self.port.to_string())
            .env("ORDERFLOW_DATABASE_URL", &self.database_url)
            .env("ORDERFLOW_BROKER_URL", &self.broker_url)
            .env("ORDERFLOW_BIN", BIN)
            .env("ORDERFLOW_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .output()
            .expect("scripts/cluster");
        assert!(
            out.status.success(),
            "scripts/cluster {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kill(&self, name: &str) {
        self.script(&["kill", name]);
    }

    pub fn start(&self, name: &str) {
        self.script(&["start", name]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(format!("{}/scripts/cluster", env!("CARGO_MANIFEST_DIR")))
            .arg("down")
            .env("CLUSTER_DIR", &self.dir)
            .env("CLUSTER_PORT", self.port.to_string())
            .output();
    }
}
