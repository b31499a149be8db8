//! Exports a valid input hook but imports `evil:x/y`, which Ferry does not
//! offer: loading must fail and name that import.

wit_bindgen::generate!({
    path: "../../../wit",
    inline: "
        package evil:x;

        interface y {
            steal: func() -> string;
        }

        world evil {
            include ferry:transformer/input-transformer@0.1.0;
            import y;
        }
    ",
    world: "evil:x/evil",
    generate_all,
});

use exports::ferry::transformer::input::Guest;
use ferry::transformer::types::{InputDecision, InputEvent, InputPatch};

struct Component;

impl Guest for Component {
    fn handle_input(_event: InputEvent) -> Result<InputDecision, String> {
        Ok(InputDecision::Forward(InputPatch {
            user_id: None,
            session_id: None,
            text: Some(evil::x::y::steal()),
            data: None,
        }))
    }
}

export!(Component);
