//! The deployment files. No container engine runs on the machines that test Usher, so
//! what can be checked without one is: the compose file parses, it has the pieces the
//! README promises, every variable it sets on an Usher instance is one `usher serve`
//! reads (with a value it accepts), and the load balancer passes WebSockets.

use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn repository_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn serve_help() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["serve", "--help"])
        .output()
        .expect("usher serve --help");
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_compose_file_runs_postgres_redis_two_instances_and_a_balancer() {
    let docs = YamlLoader::load_from_str(&repository_file("docker-compose.yml")).expect("YAML");
    let services = docs[0]["services"].as_hash().expect("services");
    let names: Vec<&str> = services.keys().filter_map(Yaml::as_str).collect();
    for wanted in ["postgres", "redis", "balancer"] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }
    let instances: Vec<&Yaml> = services
        .iter()
        .filter(|(name, _)| name.as_str().is_some_and(|n| n.starts_with("usher")))
        .map(|(_, service)| service)
        .collect();
    assert!(instances.len() >= 2, "at least two Usher instances");

    let help = serve_help();
    for instance in instances {
        assert_eq!(
            instance["build"].as_str(),
            Some("."),
            "built from the Dockerfile"
        );
        let environment = instance["environment"].as_hash().expect("environment");
        let mut set = Vec::new();
        for (name, value) in environment {
            let name = name.as_str().unwrap();
            set.push(name);
            assert!(
                help.contains(&format!("[env: {name}")),
                "usher serve does not read {name}"
            );
            let value = value.as_str().unwrap_or_default();
            match name {
                "USHER_ADDR" => {
                    value.parse::<std::net::SocketAddr>().expect("USHER_ADDR");
                }
                "USHER_TRUSTED_PROXIES" => {
                    usher_server::rate_limit::TrustedProxies::parse(value).expect("proxies");
                }
                "DATABASE_URL" => assert!(value.starts_with("postgres://")),
                "REDIS_URL" => assert!(value.starts_with("redis://")),
                _ => {}
            }
        }
        for required in [
            "DATABASE_URL",
            "REDIS_URL",
            "USHER_MASTER_KEY",
            "USHER_JWT_SECRET",
        ] {
            assert!(set.contains(&required), "every instance shares {required}");
        }
    }
}

#[test]
fn the_balancer_passes_websockets_to_every_instance() {
    let nginx = repository_file("deploy/nginx.conf");
    for needed in [
        "proxy_http_version 1.1",
        "proxy_set_header Upgrade $http_upgrade",
        "proxy_set_header Connection $connection_upgrade",
        "X-Forwarded-For",
        "server usher-1:8080",
        "server usher-2:8080",
    ] {
        assert!(nginx.contains(needed), "deploy/nginx.conf lacks {needed:?}");
    }
    let dockerfile = repository_file("Dockerfile");
    assert!(dockerfile.contains("AS build") && dockerfile.contains("COPY --from=build"));
}
