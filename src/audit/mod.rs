//! Rule audit: NSG definitions ([`defs`]) against the traffic the logs show, with exact set
//! arithmetic over rule match spaces ([`space`]).

pub mod defs;
pub mod space;
