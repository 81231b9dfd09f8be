//! The simulator's short run for CI: a thousand agents pulling one image
//! through the real scheduler with the registry's default settings (pieces
//! cut by its rule: 256 KiB for these 16 MiB layers, so stripe trees), a few
//! of them starting late.
//!
//! Killed agents are left out: with 2 % of the agents killed and started
//! again 5 s later, every agent still completes, but the registry sent
//! 1.14x the image (pieces whose only holder was killed go out again) and
//! the makespan, 11.0 s, is the downtime plus about twice the bound. That
//! case is run by hand (`damselfly-sim --nodes 1000 --mbit 200 --rtt-ms 2
//! --churn 0.02 --downtime-s 5 --late 0.02 --late-window-s 3`).

use std::time::Duration;

use damselfly_sim::{mbit, Image, Scenario};

#[test]
fn a_thousand_agents_all_get_their_image_near_the_bound_from_one_copy_at_the_registry() {
    let scenario = Scenario {
        nodes: 1000,
        images: vec![Image::even(4, 16 << 20)],
        seed_up: mbit(200.0),
        up: mbit(200.0),
        down: mbit(200.0),
        rtt: Duration::from_millis(2),
        rtt_between: Duration::from_millis(2),
        late: 0.02,
        late_window: Duration::from_secs(3),
        rate_step: Duration::from_millis(5),
        ..Scenario::bench(1000)
    };
    let outcome = damselfly_sim::run(&scenario);
    eprintln!("{outcome}");
    assert_eq!(outcome.completed, 1000, "every agent, late or not, gets its image");
    assert!(outcome.egress() <= 1.05, "the registry sent {:.3}x the image", outcome.egress());
    assert!(
        outcome.makespan < 4.0 * outcome.bound,
        "the makespan {:.1} s is not of the bound's order ({:.1} s)",
        outcome.makespan,
        outcome.bound
    );
}
