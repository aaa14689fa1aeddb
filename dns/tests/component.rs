//! Component tests: the real server on `127.0.0.1:0`, queried with real clients (hickory's
//! message codec over sockets, hickory-resolver, and `dig`).

mod component {
    mod answers;
    mod corpus;
    mod fixture;
    mod forwarding;
    mod junk;
    mod lifecycle;
    mod support;
    mod truncation;
}
