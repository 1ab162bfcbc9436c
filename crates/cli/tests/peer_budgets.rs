//! A peer's own budgets: a chat author and an overlay neighbour that send
//! too fast lose what is over their budget (counted in `status`), and an
//! honest peer beside them is unaffected.

mod common;

use common::*;

fn status(d: &Daemon) -> serde_json::Value {
    d.json(&["status"])
}

#[test]
fn a_chatty_author_and_a_flooding_neighbour_are_held_to_their_budgets() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Daemon::host("root", &tmp.path().join("root"), &[]);
    let loud = Daemon::peer("loud", &tmp.path().join("loud"), &root.ticket, &[]);
    let strict = Daemon::peer("strict", &tmp.path().join("strict"), &root.ticket, &["--chat-rate", "2/5", "--flood-rate", "2/5"]);
    let calm = Daemon::peer("calm", &tmp.path().join("calm"), &root.ticket, &[]);
    let file = tmp.path().join("budget-target.txt");
    std::fs::write(&file, b"held to a budget").unwrap();
    strict.ok(&["share", file.to_str().unwrap()]);
    let everyone: Vec<String> = ["root", "loud", "strict", "calm"].map(String::from).to_vec();
    wait_for_room(&[&root, &loud, &strict, &calm], &everyone);
    let neighbours_of = |d: &Daemon| -> Vec<String> {
        status(d)["neighbors"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect()
    };
    wait_until(PATIENCE, "loud and calm to be strict's overlay neighbours", || {
        let n = neighbours_of(&strict);
        [&loud, &calm].iter().all(|d| n.iter().any(|s| d.id().starts_with(s.as_str())))
    });

    // Chat: 20 messages from loud as fast as the CLI goes.
    for i in 0..20 {
        loud.ok(&["say", &format!("message {i}")]);
    }
    calm.ok(&["say", "one calm line"]);
    let loud_id = loud.id();
    wait_until(PATIENCE, "calm's line to reach strict", || texts_from(&strict, &calm.id()) == ["one calm line"]);
    wait_until(PATIENCE, "root to have all of loud's messages", || texts_from(&root, &loud_id).len() == 20);
    let got = texts_from(&strict, &loud_id).len();
    let dropped = status(&strict)["dropped_events"]["OverBudget"].as_u64().unwrap_or(0);
    println!("strict got {got} of loud's 20 messages and dropped {dropped} events over loud's budget");
    assert!(dropped > 0 && got < 20, "an author over its budget loses events (got {got}, dropped {dropped})");

    // Flood: 30 one-hop searches from loud at once; strict takes a few.
    std::thread::scope(|scope| {
        for _ in 0..30 {
            scope.spawn(|| loud.ok(&["search", "--flood-only", "--ttl", "1", "--wait", "1s", "budget"]));
        }
    });
    let s = status(&strict);
    let (over, handled) = (s["flood_over_budget"].as_u64().unwrap(), s["flood_handled"].as_u64().unwrap());
    println!("strict handled {handled} of loud's 30 queries and dropped {over} over loud's budget");
    assert!(over > 0, "a neighbour over its budget loses queries");
    // calm's own query to strict is within calm's budget.
    let hits = calm.json(&["search", "--flood-only", "--ttl", "1", "budget-target"]);
    let names: Vec<&str> = hits.as_array().unwrap().iter().filter_map(|h| h["name"].as_str()).collect();
    assert!(names.contains(&"budget-target.txt"), "an honest neighbour is answered: {hits}");
}
