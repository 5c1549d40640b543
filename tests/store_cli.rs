//! `rpol store stats|list|delete|import-postgrey` against a real redb file
//! (written by the daemon, or by the library as the daemon writes it), an
//! old-format file, a real Berkeley DB made by Debian's db_load in
//! postgrey's layout, and a throw-away redis-server.

use crate::support::redis as redis_server;
use crate::support::rpol as daemon;

use std::path::Path;
use std::process::{Command, Output};

use daemon::{Setup, ask_action};
use rpol::common::unix_now;
use rpol::state::store::greylist::{GreylistParams, TripletInfo, TripletKey, Verdict};
use rpol::state::store::{Backend, Store, StoreSettings};

/// A RCPT from 198.51.100.9.
const RCPT: &[(&str, &str)] = &[
    ("request", "smtpd_access_policy"),
    ("protocol_state", "RCPT"),
    ("client_address", "198.51.100.9"),
    ("client_name", "unknown"),
    ("sender", "Someone+tag@Sender.example"),
    ("recipient", "alice@example.com"),
];

fn config(store: &str, greylist: &str) -> String {
    format!(
        "[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n\
         [store]\n{store}\n\
         [greylist]\n{greylist}\n\
         [profile.mx]\nrecipient = [\"check_greylist\"]\n"
    )
}

const EMBEDDED: &str = "path = \"greylist.redb\"\n";

fn store_cmd(setup: &Setup, args: &[&str]) -> Output {
    Command::new(daemon::RPOL)
        .arg("-c")
        .arg(&setup.config)
        .arg("store")
        .args(args)
        .output()
        .expect("run rpol store")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn params(now: u64) -> GreylistParams {
    GreylistParams {
        now,
        delay: 300,
        retry_window: 2 * 86_400,
        max_age: 35 * 86_400,
        auto_whitelist_clients: 5,
    }
}

fn embedded(path: &Path) -> StoreSettings {
    StoreSettings {
        backend: Backend::Embedded {
            path: path.to_path_buf(),
        },
        ..StoreSettings::default()
    }
}

/// One request through the daemon, then the commands: refused while it
/// runs, then the stats, the listing (with the addresses in full, or as
/// digests with `privacy`), and a delete by the listed key.
fn daemon_then_commands(privacy: bool) {
    let greylist = format!("privacy = {privacy}\n");
    let setup = Setup::new(&config(EMBEDDED, &greylist));
    let mut daemon = setup.start();
    let mut con = daemon.connect();
    let action = ask_action(&mut con, RCPT);
    assert!(
        action.starts_with("DEFER_IF_PERMIT 4.7.1 Greylisted"),
        "{action}"
    );
    let out = store_cmd(&daemon.setup, &["stats"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("open in the running rpol (pid {})", daemon.pid())),
        "{err}"
    );
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success());
    let setup = &daemon.setup;

    let stats = json_lines(&ok(store_cmd(setup, &["stats", "--json"])));
    assert_eq!(stats[0]["triplets"], 1);
    assert_eq!(stats[0]["unconfirmed"], 1);
    assert_eq!(stats[0]["with_details"], 1);
    let text = ok(store_cmd(setup, &["stats"]));
    assert!(text.contains("triplets"), "{text}");

    let rows = json_lines(&ok(store_cmd(setup, &["list", "--greylist", "--json"])));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["network"], "198.51.100.0");
    assert_eq!(row["sender_domain"], "sender.example");
    assert_eq!(row["seen"], 1);
    assert_eq!(row["passed"], false);
    let now = unix_now();
    let first = row["first_seen"].as_u64().unwrap();
    assert!(first <= now && now - first < 60, "{row}");
    let table = ok(store_cmd(setup, &["list"]));
    if privacy {
        for field in ["sender", "recipient"] {
            let v = row[field].as_str().unwrap();
            assert!(v.starts_with("sha256:") && !v.contains('@'), "{row}");
        }
        assert!(
            !table.contains("someone@") && !table.contains("alice@"),
            "{table}"
        );
    } else {
        assert_eq!(row["sender"], "someone@sender.example", "normalised");
        assert_eq!(row["recipient"], "alice@example.com");
        assert!(table.contains("alice@example.com"), "{table}");
    }
    assert!(
        table.contains("KEY") && table.contains("waiting"),
        "{table}"
    );
    assert!(table.contains("RATE KEY"), "{table}");

    let key = row["key"].as_str().unwrap();
    let out = ok(store_cmd(setup, &["delete", &key[..12]]));
    assert_eq!(out, "deleted 1 record(s)\n");
    let stats = json_lines(&ok(store_cmd(setup, &["stats", "--json"])));
    assert_eq!(stats[0]["triplets"], 0);
    let out = store_cmd(setup, &["delete", &key[..12]]);
    assert!(!out.status.success(), "nothing left to delete: {out:?}");
}

#[test]
fn the_commands_on_a_daemons_redb_file() {
    daemon_then_commands(false);
}

#[test]
fn privacy_keeps_digests_of_the_addresses() {
    daemon_then_commands(true);
}

/// `--older-than` removes what was last seen before, triplets and clients.
#[tokio::test(flavor = "multi_thread")]
async fn delete_by_age_and_a_client_by_address() {
    let setup = Setup::new(&config(EMBEDDED, ""));
    let path = setup.path("greylist.redb");
    let now = unix_now();
    {
        let store = Store::open(&embedded(&path)).unwrap();
        let cases = [
            ("old", "203.0.113.1", now - 10 * 86_400),
            ("new", "203.0.113.2", now - 600),
        ];
        for (sender, client, at) in cases {
            let key = TripletKey::new("203.0.113.0", sender, "b@y.example");
            let info = TripletInfo::new("203.0.113.0", sender, "b@y.example", false);
            // Seen, then passed after the delay: the client is counted.
            for at in [at, at + 300] {
                store
                    .greylist_noting(key, Some(info.clone()), "203.0.113.0", client, params(at))
                    .await
                    .unwrap();
            }
        }
    }
    let before = json_lines(&ok(store_cmd(&setup, &["list", "--json"])));
    assert_eq!(before.len(), 4, "two triplets, two clients: {before:?}");
    let out = ok(store_cmd(&setup, &["delete", "--older-than", "5d"]));
    assert_eq!(
        out, "deleted 2 record(s)\n",
        "the old triplet and its client"
    );
    let after = json_lines(&ok(store_cmd(&setup, &["list", "--greylist", "--json"])));
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0]["sender"], "new");
    assert_eq!(after[0]["seen"], 2);
    assert_eq!(after[0]["passed"], true);
    let client = after[1]["address"].as_str().unwrap().to_string();
    let out = ok(store_cmd(&setup, &["delete", &client]));
    assert_eq!(out, "deleted 1 record(s)\n");
    let left = json_lines(&ok(store_cmd(&setup, &["list", "--greylist", "--json"])));
    assert_eq!(left.len(), 1, "{left:?}");
    let out = store_cmd(&setup, &["delete", "--older-than", "5 parsecs"]);
    assert!(!out.status.success());
}

/// A file written before triplets had details (hash-only records): it
/// opens, lists its triplet without them, and gets them when seen again.
#[tokio::test(flavor = "multi_thread")]
async fn an_old_format_file_is_read_and_upgraded_in_place() {
    let setup = Setup::new(&config(EMBEDDED, ""));
    let path = setup.path("greylist.redb");
    let now = unix_now();
    let key = TripletKey::new("203.0.113.0", "a@x.example", "b@y.example");
    {
        // The tables of rpol before this change, and nothing else.
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let triplets: redb::TableDefinition<[u8; 32], (u64, u64)> =
                redb::TableDefinition::new("greylist_triplets");
            let unconfirmed: redb::TableDefinition<(u64, [u8; 32]), &str> =
                redb::TableDefinition::new("greylist_unconfirmed");
            let networks: redb::TableDefinition<&str, u64> =
                redb::TableDefinition::new("greylist_networks");
            let clients: redb::TableDefinition<&str, (u64, u64)> =
                redb::TableDefinition::new("greylist_clients");
            tx.open_table(triplets)
                .unwrap()
                .insert(key.0, (now - 100, now - 100))
                .unwrap();
            tx.open_table(unconfirmed)
                .unwrap()
                .insert((now - 100, key.0), "203.0.113.0")
                .unwrap();
            tx.open_table(networks)
                .unwrap()
                .insert("203.0.113.0", 1)
                .unwrap();
            tx.open_table(clients).unwrap();
        }
        tx.commit().unwrap();
    }
    let rows = json_lines(&ok(store_cmd(&setup, &["list", "--greylist", "--json"])));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["key"], key.hex());
    assert!(rows[0]["network"].is_null() && rows[0]["seen"].is_null());
    assert_eq!(rows[0]["passed"], false);
    {
        let store = Store::open(&embedded(&path)).unwrap();
        let info = TripletInfo::new("203.0.113.0", "a@x.example", "b@y.example", false);
        let v = store
            .greylist_noting(
                key,
                Some(info),
                "203.0.113.0",
                "203.0.113.9",
                params(now + 250),
            )
            .await
            .unwrap();
        assert!(
            matches!(v, Verdict::Passed { .. }),
            "the old record counts: {v:?}"
        );
    }
    let rows = json_lines(&ok(store_cmd(&setup, &["list", "--greylist", "--json"])));
    assert_eq!(rows[0]["sender"], "a@x.example", "{rows:?}");
    assert_eq!(rows[0]["seen"], 1);
}

/// postgrey's two files in its layout, by db_load from dump text.
fn postgrey_dir(dir: &Path, now: u64) {
    let load = |file: &str, pairs: &[(String, String)]| {
        let mut text = String::from("VERSION=3\nformat=print\ntype=btree\nHEADER=END\n");
        for (k, v) in pairs {
            text.push_str(&format!(" {k}\n {v}\n"));
        }
        text.push_str("DATA=END\n");
        let dump = dir.join(format!("{file}.txt"));
        std::fs::write(&dump, text).unwrap();
        let out = Command::new("db_load")
            .arg("-f")
            .arg(&dump)
            .arg(dir.join(file))
            .output()
            .expect("db_load (apt install db-util)");
        assert!(out.status.success(), "{out:?}");
    };
    let t = |a: u64, b: u64| format!("{},{}", now - a, now - b);
    load(
        "postgrey.db",
        &[
            // Passed 3 days ago.
            (
                "203.0.113.0/a@x.example/b@y.example".into(),
                t(4 * 86_400, 3 * 86_400),
            ),
            // Waiting for its retry.
            (
                "2001:db8:0:0:0:0:0:0/c@x.example/b@y.example".into(),
                t(100, 100),
            ),
            // Gone from postgrey's view (beyond max_age).
            (
                "198.51.100.0/d@x.example/b@y.example".into(),
                t(90 * 86_400, 80 * 86_400),
            ),
            // postgrey --privacy: a digest rpol cannot turn into its key.
            ("0123456789abcdef0123456789abcdef01234567".into(), t(10, 10)),
        ],
    );
    load(
        "postgrey_clients.db",
        &[
            ("192.0.2.7".into(), format!("7,{}", now - 600)),
            ("192.0.2.8".into(), format!("1,{}", now - 600)),
        ],
    );
}

fn import_then_check(setup: &Setup, settings: StoreSettings) {
    let dir = setup.path("postgrey");
    std::fs::create_dir_all(&dir).unwrap();
    let now = unix_now();
    postgrey_dir(&dir, now);
    let out = ok(store_cmd(
        setup,
        &["import-postgrey", dir.to_str().unwrap()],
    ));
    assert_eq!(
        out,
        "imported 2 triplet(s) and 2 client(s); 0 already held, 0 beyond a budget, \
         1 expired, 1 unreadable (postgrey --privacy keys cannot be imported)\n"
    );
    // Again: everything is held already.
    let out = ok(store_cmd(
        setup,
        &["import-postgrey", dir.to_str().unwrap()],
    ));
    assert!(
        out.contains("0 triplet(s) and 0 client(s); 4 already held"),
        "{out}"
    );
    let rows = json_lines(&ok(store_cmd(setup, &["list", "--greylist", "--json"])));
    let nets: Vec<_> = rows.iter().map(|r| r["network"].clone()).collect();
    assert!(nets.contains(&"203.0.113.0".into()), "{rows:?}");
    assert!(nets.contains(&"2001:db8::".into()), "{rows:?}");
    let seven = rows.iter().find(|r| r["address"] == "192.0.2.7").unwrap();
    assert_eq!(seven["count"], 7);
    // The records act as rpol's own: the passed triplet is known, the
    // client counted 7 times is auto-whitelisted.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(&settings).unwrap();
        let key = TripletKey::new("203.0.113.0", "a@x.example", "b@y.example");
        let v = store
            .greylist(key, "203.0.113.0", "203.0.113.5", params(now))
            .await;
        assert_eq!(v, Ok(Verdict::Known));
        let key = TripletKey::new("192.0.2.0", "z@x.example", "b@y.example");
        let v = store
            .greylist(key, "192.0.2.0", "192.0.2.7", params(now))
            .await;
        assert_eq!(v, Ok(Verdict::AutoWhitelisted { count: 7 }));
    });
}

#[test]
#[ignore = "needs db_load and db_dump (db-util)"]
fn import_postgrey_into_the_embedded_store() {
    let setup = Setup::new(&config(EMBEDDED, ""));
    let settings = embedded(&setup.path("greylist.redb"));
    import_then_check(&setup, settings);
}

#[test]
#[ignore = "needs redis-server"]
fn the_commands_on_redis() {
    let server = redis_server::start();
    let store = format!("backend = \"redis\"\nurl = \"{}\"\n", server.url);
    let setup = Setup::new(&config(&store, ""));
    import_then_check(&setup, settings_of(&server));
    let stats = json_lines(&ok(store_cmd(&setup, &["stats", "--json"])));
    assert_eq!(stats[0]["triplets"], 2, "{stats:?}");
    assert_eq!(stats[0]["unconfirmed"], 1, "{stats:?}");
    assert_eq!(stats[0]["clients"], 2, "{stats:?}");
    let rows = json_lines(&ok(store_cmd(&setup, &["list", "--greylist", "--json"])));
    let waiting = rows.iter().find(|r| r["passed"] == false).unwrap();
    let key = waiting["key"].as_str().unwrap();
    assert_eq!(
        ok(store_cmd(&setup, &["delete", &key[..10]])),
        "deleted 1 record(s)\n"
    );
    assert_eq!(
        ok(store_cmd(&setup, &["delete", "192.0.2.8"])),
        "deleted 1 record(s)\n"
    );
    // The known triplet was seen just now; the client 10 minutes ago.
    let out = ok(store_cmd(&setup, &["delete", "--older-than", "5m"]));
    assert_eq!(out, "deleted 1 record(s)\n", "the client");
    let stats = json_lines(&ok(store_cmd(&setup, &["stats", "--json"])));
    let counts = (stats[0]["triplets"].as_u64(), stats[0]["clients"].as_u64());
    assert_eq!(counts, (Some(1), Some(0)), "{stats:?}");
    // No index still names a deleted triplet.
    let mut con = redis::Client::open(server.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    for index in [
        "rpol:greylist:unconfirmed",
        "rpol:greylist:net:2001:db8::",
        "rpol:awl:index",
    ] {
        let n: u64 = redis::cmd("ZCARD").arg(index).query(&mut con).unwrap();
        assert_eq!(n, 0, "{index}");
    }
    // A record of the older form ("first,last") is read, and gets its
    // details when seen again.
    let now = unix_now();
    let key = TripletKey::new("203.0.113.0", "old@x.example", "b@y.example");
    let old = format!("{},{}", now - 100, now - 100);
    let _: () = redis::cmd("SET")
        .arg(format!("rpol:greylist:{}", key.hex()))
        .arg(&old)
        .query(&mut con)
        .unwrap();
    let rows = json_lines(&ok(store_cmd(&setup, &["list", "--greylist", "--json"])));
    let row = rows.iter().find(|r| r["key"] == key.hex()).unwrap();
    assert!(row["network"].is_null() && row["seen"].is_null(), "{row}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(&settings_of(&server)).unwrap();
        let info = TripletInfo::new("203.0.113.0", "old@x.example", "b@y.example", true);
        let v = store
            .greylist_noting(
                key,
                Some(info),
                "203.0.113.0",
                "203.0.113.9",
                params(now + 250),
            )
            .await;
        assert!(
            matches!(v, Ok(Verdict::Passed { .. })),
            "the old record counts: {v:?}"
        );
    });
    let rows = json_lines(&ok(store_cmd(&setup, &["list", "--greylist", "--json"])));
    let row = rows.iter().find(|r| r["key"] == key.hex()).unwrap();
    assert_eq!(
        (&row["network"], &row["seen"]),
        (&"203.0.113.0".into(), &1.into())
    );
    assert!(
        row["sender"].as_str().unwrap().starts_with("sha256:"),
        "{row}"
    );
}

fn settings_of(server: &redis_server::RedisServer) -> StoreSettings {
    StoreSettings {
        backend: Backend::Redis {
            url: server.url.clone(),
        },
        ..StoreSettings::default()
    }
}
