//! The plugins compiled into the binary, so it parses with no files on disk. Each is a file in
//! `parsers/`; a test checks this list and that folder agree.

pub const EMBEDDED: &[(&str, &str)] = &[
    ("applecash", include_str!("../../parsers/applecash.toml")),
    (
        "bankofamerica",
        include_str!("../../parsers/bankofamerica.toml"),
    ),
    ("bunq", include_str!("../../parsers/bunq.toml")),
    ("cashapp", include_str!("../../parsers/cashapp.toml")),
    ("chase", include_str!("../../parsers/chase.toml")),
    ("monzo", include_str!("../../parsers/monzo.toml")),
    ("paypal", include_str!("../../parsers/paypal.toml")),
    ("splitwise", include_str!("../../parsers/splitwise.toml")),
    ("starling", include_str!("../../parsers/starling.toml")),
    ("up", include_str!("../../parsers/up.toml")),
    ("venmo", include_str!("../../parsers/venmo.toml")),
    ("wellsfargo", include_str!("../../parsers/wellsfargo.toml")),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_parsers_is_embedded_and_compiles() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/parsers");
        let mut on_disk: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .filter_map(|e| {
                let path = e.unwrap().path();
                (path.extension()? == "toml")
                    .then(|| path.file_stem().unwrap().to_string_lossy().into_owned())
            })
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = EMBEDDED.iter().map(|(id, _)| (*id).to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
        for (id, text) in EMBEDDED {
            if let Err(errors) = crate::parse::rules::compile(id, id, text) {
                panic!("{errors:#?}");
            }
        }
    }
}
