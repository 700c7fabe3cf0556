use super::*;
use serde_json::json;

fn ctx() -> Value {
    json!({
        "inputs": {
            "image": "ghcr.io/acme/app",
            "tag": "v1",
            "replicas": 3,
            "push": true,
            "ratio": 0.5,
            "platforms": ["amd64", "arm64"],
            "labels": {"team": "core", "tier": 1},
            "empty": "",
            "nothing": null,
            "html": "<a & b>",
            "unicode": "héllo"
        },
        "env": {"RUST_LOG": "info"},
        "steps": {
            "build": {
                "outputs": {"image": "app:1", "list": [1, "two", {"three": 3}], "count": 0},
                "status": "succeeded",
                "error": null
            },
            "scan": {
                "outputs": {},
                "status": "failed",
                "error": {"class": "transient", "code": 7, "message": "timeout"}
            }
        },
        "run": {"id": "r-1", "workspace": "/tmp/ws"},
        "workflow": {"name": "containerize"},
        "item": {"name": "a"},
        "index": 2
    })
}

fn render(src: &str) -> Value {
    render_str(src, &ctx()).unwrap_or_else(|e| panic!("{src:?}: {e:?}"))
}

fn render_err(src: &str) -> TemplateError {
    match render_str(src, &ctx()) {
        Ok(v) => panic!("{src:?} rendered to {v:?}"),
        Err(e) => e,
    }
}

fn refs(src: &str) -> Vec<(String, bool)> {
    analyze(src)
        .unwrap()
        .references
        .into_iter()
        .map(|r| (r.segments.join("."), r.scoped))
        .collect()
}

fn r(path: &str, scoped: bool) -> (String, bool) {
    (path.to_owned(), scoped)
}

// ---- rendering: types -------------------------------------------------------------------

#[test]
fn plain_strings_come_back_unchanged() {
    assert_eq!(render("just text"), json!("just text"));
    assert_eq!(render(""), json!(""));
    // no template: not even parsed, so odd handlebars-looking text is fine
    assert_eq!(render("a } b {"), json!("a } b {"));
}

#[test]
fn bare_path_keeps_json_type() {
    assert_eq!(render("{{inputs.replicas}}"), json!(3));
    assert_eq!(render("{{inputs.ratio}}"), json!(0.5));
    assert_eq!(render("{{inputs.push}}"), json!(true));
    assert_eq!(render("{{inputs.nothing}}"), json!(null));
    assert_eq!(render("{{inputs.platforms}}"), json!(["amd64", "arm64"]));
    assert_eq!(
        render("{{inputs.labels}}"),
        json!({"team": "core", "tier": 1})
    );
    assert_eq!(render("{{steps.build.outputs.list.1}}"), json!("two"));
    assert_eq!(render("{{steps.build.outputs.list.[2].three}}"), json!(3));
    assert_eq!(render("{{index}}"), json!(2));
    assert_eq!(render("{{ inputs.replicas }}"), json!(3));
    assert_eq!(render("{{~inputs.replicas~}}"), json!(3));
    assert_eq!(render("{{{inputs.html}}}"), json!("<a & b>"));
    assert_eq!(render("{{@root.inputs.tag}}"), json!("v1"));
}

#[test]
fn json_helper_keeps_json_type_as_a_whole_string() {
    assert_eq!(
        render("{{json inputs.platforms}}"),
        json!(["amd64", "arm64"])
    );
    assert_eq!(
        render("{{json inputs.labels}}"),
        json!({"team": "core", "tier": 1})
    );
    assert_eq!(render("{{json inputs.replicas}}"), json!(3));
    assert_eq!(
        render("{{json steps.build.outputs}}"),
        ctx()["steps"]["build"]["outputs"]
    );
    assert_eq!(render("{{json \"x\"}}"), json!("x"));
}

#[test]
fn json_helper_inside_a_longer_string_is_compact_json_text() {
    assert_eq!(
        render("platforms={{json inputs.platforms}}"),
        json!(r#"platforms=["amd64","arm64"]"#)
    );
    assert_eq!(
        render("{{json inputs.labels}} "),
        json!(r#"{"team":"core","tier":1} "#)
    );
    assert_eq!(render("s={{json inputs.tag}}"), json!(r#"s="v1""#));
    assert_eq!(
        render("{{json inputs.labels pretty=true}}!"),
        json!("{\n  \"team\": \"core\",\n  \"tier\": 1\n}!")
    );
}

#[test]
fn helper_calls_keep_json_type_as_a_whole_string() {
    assert_eq!(render("{{eq inputs.tag \"v1\"}}"), json!(true));
    assert_eq!(render("{{ne inputs.replicas 3}}"), json!(false));
    assert_eq!(render("{{gt inputs.replicas 2}}"), json!(true));
    assert_eq!(render("{{lt inputs.replicas 2}}"), json!(false));
    assert_eq!(render("{{gte inputs.replicas 3}}"), json!(true));
    assert_eq!(render("{{lte inputs.replicas 2}}"), json!(false));
    assert_eq!(render("{{and inputs.push inputs.tag}}"), json!(true));
    assert_eq!(render("{{or inputs.empty inputs.nothing}}"), json!(false));
    assert_eq!(render("{{not inputs.push}}"), json!(false));
    assert_eq!(render("{{len steps.build.outputs.list}}"), json!(3));
    assert_eq!(render("{{len inputs.labels}}"), json!(2));
    assert_eq!(render("{{len inputs.unicode}}"), json!(5));
    assert_eq!(render("{{default inputs.nope 3}}"), json!(3));
    assert_eq!(
        render("{{default inputs.nope inputs.platforms}}"),
        json!(["amd64", "arm64"])
    );
    assert_eq!(render("{{lookup inputs.platforms 1}}"), json!("arm64"));
    assert_eq!(
        render("{{lookup steps \"build\"}}"),
        ctx()["steps"]["build"]
    );
    assert_eq!(render("{{eq (len inputs.platforms) 2}}"), json!(true));
    assert_eq!(
        render("{{join inputs.platforms \",\"}}"),
        json!("amd64,arm64")
    );
}

#[test]
fn helpers_inside_longer_strings() {
    assert_eq!(render("{{eq index 2}}!"), json!("true!"));
    assert_eq!(render("n={{len inputs.platforms}}"), json!("n=2"));
    assert_eq!(
        render("{{#if (gt index 1)}}big{{else}}small{{/if}}"),
        json!("big")
    );
    assert_eq!(
        render("{{#eq inputs.tag \"v1\"}}yes{{else}}no{{/eq}}"),
        json!("yes")
    );
}

// ---- rendering: strings -----------------------------------------------------------------

#[test]
fn interpolation_renders_to_a_string() {
    assert_eq!(
        render("{{inputs.image}}:{{inputs.tag}}"),
        json!("ghcr.io/acme/app:v1")
    );
    assert_eq!(render("replicas={{inputs.replicas}}"), json!("replicas=3"));
    assert_eq!(render(" {{inputs.replicas}}"), json!(" 3"));
    assert_eq!(
        render("{{inputs.replicas}}{{inputs.replicas}}"),
        json!("33")
    );
    assert_eq!(render("x{{inputs.nothing}}y"), json!("xy"));
    assert_eq!(
        render("{{run.id}} in {{run.workspace}}"),
        json!("r-1 in /tmp/ws")
    );
    assert_eq!(
        render("{{steps.scan.error.class}}/{{steps.scan.error.code}}"),
        json!("transient/7")
    );
    assert_eq!(
        render("{{#each inputs.platforms}}{{@index}}:{{this}};{{/each}}"),
        json!("0:amd64;1:arm64;")
    );
    assert_eq!(
        render("{{#each inputs.platforms}}{{../workflow.name}}-{{this}} {{/each}}"),
        json!("containerize-amd64 containerize-arm64 ")
    );
    assert_eq!(render("{{#with item}}{{name}}{{/with}}"), json!("a"));
    assert_eq!(render("{{#if inputs.push}}push{{/if}}"), json!("push"));
    assert_eq!(render("{{#unless inputs.push}}push{{/unless}}"), json!(""));
    // a comment alone is not an expression
    assert_eq!(render("{{! nothing }}"), json!(""));
    // escaped braces stay literal
    assert_eq!(render(r"\{{inputs.tag}}"), json!("{{inputs.tag}}"));
}

#[test]
fn nothing_is_html_escaped() {
    assert_eq!(render("{{inputs.html}}"), json!("<a & b>"));
    assert_eq!(render("x {{inputs.html}} '\"="), json!("x <a & b> '\"="));
    assert_eq!(render("{{json inputs.html}}!"), json!("\"<a & b>\"!"));
    assert_eq!(
        render("{{#if true}}{{inputs.html}}{{/if}}"),
        json!("<a & b>")
    );
    assert_eq!(
        render("{{join (lookup inputs \"html\") \",\"}}!"),
        json!("<a & b>!")
    );
}

#[test]
fn default_helper() {
    // missing, null and "" fall back; anything else is kept
    assert_eq!(render("{{default inputs.nope \"x\"}}"), json!("x"));
    assert_eq!(render("{{default inputs.nothing \"x\"}}"), json!("x"));
    assert_eq!(render("{{default inputs.empty \"x\"}}"), json!("x"));
    assert_eq!(render("{{default inputs.tag \"x\"}}"), json!("v1"));
    assert_eq!(render("{{default steps.build.outputs.count 5}}"), json!(0));
    assert_eq!(render("{{default inputs.push false}}"), json!(true));
    // whole missing subtrees are fine too
    assert_eq!(render("{{default steps.nope.outputs.x 1}}"), json!(1));
    assert_eq!(
        render("tag={{default inputs.nope inputs.tag}}"),
        json!("tag=v1")
    );
    // nested defaults
    assert_eq!(
        render("{{default inputs.a (default inputs.b inputs.replicas)}}"),
        json!(3)
    );
    // but the fallback itself must exist
    assert_eq!(
        render_err("{{default inputs.nope inputs.also_nope}}").message,
        "`inputs.also_nope` is not defined"
    );
}

#[test]
fn join_helper() {
    assert_eq!(
        render("{{join inputs.platforms \", \"}}"),
        json!("amd64, arm64")
    );
    assert_eq!(
        render("[{{join inputs.platforms}}]"),
        json!("[amd64,arm64]")
    );
    assert_eq!(
        render("{{join steps.build.outputs.list \"|\"}}"),
        json!(r#"1|two|{"three":3}"#)
    );
    assert_eq!(render("{{join inputs.tag \"-\"}}"), json!("v1"));
    assert_eq!(render("{{join inputs.nothing \"-\"}}"), json!(""));
    assert_eq!(
        render_err("{{join inputs.nope \",\"}}").message,
        "`inputs.nope` is not defined"
    );
}

// ---- rendering: strict mode -------------------------------------------------------------

#[test]
fn missing_variables_are_errors_naming_them() {
    let e = render_err("{{inputs.nope}}");
    assert_eq!(e.message, "`inputs.nope` is not defined");
    assert_eq!(e.offset, Some(2));

    let e = render_err("image: {{inputs.nope}}");
    assert_eq!(e.message, "`inputs.nope` is not defined");
    assert_eq!(e.offset, Some(9));

    let e = render_err("{{#if inputs.push}}{{steps.nope.outputs.x}}{{/if}}");
    assert_eq!(e.message, "`steps.nope.outputs.x` is not defined");
    assert_eq!(e.offset, Some(21));

    for (src, missing) in [
        ("{{json inputs.nope}}", "inputs.nope"),
        ("x{{json inputs.nope}}", "inputs.nope"),
        ("{{eq inputs.nope 1}}", "inputs.nope"),
        ("{{eq 1 inputs.nope}}", "inputs.nope"),
        ("{{len inputs.nope}}", "inputs.nope"),
        ("{{not inputs.nope}}", "inputs.nope"),
        ("{{#each inputs.nope}}x{{/each}}", "inputs.nope"),
        ("{{#with inputs.nope}}x{{/with}}", "inputs.nope"),
        ("{{#each inputs.platforms}}{{nope}}{{/each}}", "nope"),
        ("{{eq (len inputs.nope) 1}}", "inputs.nope"),
        ("{{inputs.tag.deeper}}", "inputs.tag.deeper"),
        ("a{{inputs.tag.deeper}}", "inputs.tag.deeper"),
    ] {
        assert_eq!(
            render_err(src).message,
            format!("`{missing}` is not defined"),
            "{src}"
        );
    }
}

#[test]
fn other_render_errors() {
    let e = render_err("{{nope_helper inputs.tag}}");
    assert_eq!(e.message, "unknown helper `nope_helper`");
    assert_eq!(e.offset, Some(2));
    let e = render_err("x {{#nope_block inputs.tag}}y{{/nope_block}}");
    assert_eq!(e.message, "unknown helper `nope_block`");
    assert_eq!(e.offset, Some(5));
}

#[test]
fn syntax_errors_have_byte_offsets() {
    let e = render_err("{{inputs.tag");
    assert!(e.offset.is_some(), "{e:?}");
    let e = analyze("abc {{#if x}}y").unwrap_err();
    assert!(e.offset.is_some(), "{e:?}");
    let e = analyze("héllo {{#if x}}y{{/each}}").unwrap_err();
    assert_eq!(e.offset, Some("héllo {{#if x}}y".len()), "{e:?}");
    assert!(
        e.message.contains("if") && e.message.contains("each"),
        "{e:?}"
    );
    let e = analyze("line one\nl2 é {{foo bar=}}").unwrap_err();
    let at = e.offset.unwrap();
    assert!(at >= "line one\nl2 é ".len(), "{e:?}");
}

#[test]
fn render_value_walks_arrays_and_objects() {
    let v = json!({
        "tag": "{{inputs.image}}:{{inputs.tag}}",
        "replicas": "{{inputs.replicas}}",
        "{{not_a_template_key}}": ["{{json inputs.platforms}}", 1, true, null, "plain"],
        "nested": {"x": "{{default inputs.nope 7}}"}
    });
    assert_eq!(
        render_value(&v, &ctx()).unwrap(),
        json!({
            "tag": "ghcr.io/acme/app:v1",
            "replicas": 3,
            "{{not_a_template_key}}": [["amd64", "arm64"], 1, true, null, "plain"],
            "nested": {"x": 7}
        })
    );
    let e = render_value(&json!({"a": ["{{inputs.nope}}"]}), &ctx()).unwrap_err();
    assert_eq!(e.message, "`inputs.nope` is not defined");
}

#[test]
fn context_pruning_does_not_change_results() {
    // templates whose paths cross arrays, roots and parents
    let c = ctx();
    for src in [
        "{{#each steps.build.outputs.list}}{{@index}}{{/each}} {{inputs.tag}}",
        "{{#each inputs.platforms}}{{@root.inputs.image}}/{{this}} {{/each}}",
        "{{#each inputs.labels}}{{@key}}={{this}} {{/each}}",
        "{{#with steps.scan}}{{status}}:{{error.message}}{{/with}}",
        "{{lookup (lookup steps \"scan\") \"status\"}}!",
        "{{json this.inputs.labels}}!",
        "{{steps.build.outputs.list.2.three}}!",
    ] {
        let t = registry()
            .render_template(src, &c)
            .unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(render_str(src, &c).unwrap(), json!(t), "{src}");
    }
}

// ---- analyze ----------------------------------------------------------------------------

#[test]
fn analyze_plain_references() {
    let a = analyze("{{inputs.image}}:{{steps.build.outputs.image}} {{item}}").unwrap();
    assert_eq!(
        a.references,
        vec![
            Reference {
                segments: vec!["inputs".into(), "image".into()],
                scoped: false,
                offset: Some(2)
            },
            Reference {
                segments: vec![
                    "steps".into(),
                    "build".into(),
                    "outputs".into(),
                    "image".into()
                ],
                scoped: false,
                offset: Some(19)
            },
            Reference {
                segments: vec!["item".into()],
                scoped: false,
                offset: Some(49)
            },
        ]
    );
    assert!(a.helpers.is_empty());
    assert_eq!(analyze("no template").unwrap(), Analysis::default());
}

#[test]
fn analyze_helpers_and_subexpressions() {
    let src = "{{json inputs.platforms}} {{default inputs.x (join steps.a.outputs.l \",\")}} \
               {{#if (and (eq inputs.a 1) (not inputs.b))}}{{json inputs.c}}{{/if}}";
    let a = analyze(src).unwrap();
    assert_eq!(
        a.helpers,
        vec!["json", "default", "join", "if", "and", "eq", "not"]
    );
    assert_eq!(
        refs(src),
        vec![
            r("inputs.platforms", false),
            r("inputs.x", false),
            r("steps.a.outputs.l", false),
            r("inputs.a", false),
            r("inputs.b", false),
            r("inputs.c", false),
        ]
    );
    for reference in &a.references {
        let at = reference.offset.unwrap();
        assert!(
            src[at..].starts_with(&reference.segments.join(".")),
            "{reference:?}"
        );
    }
    // hash arguments are references too; the hash key is not
    assert_eq!(
        refs("{{json x pretty=inputs.p}}"),
        vec![r("x", false), r("inputs.p", false)]
    );
    // a known helper name alone is a call, anything else alone is a path
    let a = analyze("{{len}} {{foo}}").unwrap();
    assert_eq!(a.helpers, vec!["len"]);
    assert_eq!(refs("{{len}} {{foo}}"), vec![r("foo", false)]);
}

#[test]
fn analyze_blocks_and_scopes() {
    let src = "{{#each steps.a.outputs.list}}{{name}} {{this}} {{@index}} {{../inputs.x}} \
               {{@root.inputs.y}}{{#if ok}}{{deep}}{{/if}}{{else}}{{inputs.empty}}{{/each}}\
               {{#with inputs.obj}}{{field}}{{/with}}{{#if inputs.flag}}{{inputs.z}}\
               {{else if (eq inputs.w 1)}}{{inputs.v}}{{else}}{{inputs.u}}{{/if}}{{this.inputs.t}}";
    assert_eq!(
        refs(src),
        vec![
            r("steps.a.outputs.list", false),
            r("name", true),
            r("", true),
            r("@index", true),
            r("inputs.x", true),
            r("inputs.y", false),
            r("ok", true),
            r("deep", true),
            r("inputs.empty", false),
            r("inputs.obj", false),
            r("field", true),
            r("inputs.flag", false),
            r("inputs.z", false),
            r("inputs.w", false),
            r("inputs.v", false),
            r("inputs.u", false),
            r("inputs.t", true),
        ]
    );
    let a = analyze(src).unwrap();
    assert_eq!(a.helpers, vec!["each", "if", "with", "eq"]);
    // offsets land on the path text, including after blocks and else-chains
    for (reference, expect) in a.references.iter().zip([
        "steps.a.outputs.list",
        "name",
        "this",
        "@index",
        "../inputs.x",
        "@root.inputs.y",
        "ok",
        "deep",
        "inputs.empty",
        "inputs.obj",
        "field",
        "inputs.flag",
        "inputs.z",
        "inputs.w",
        "inputs.v",
        "inputs.u",
        "this.inputs.t",
    ]) {
        let at = reference.offset.unwrap_or_else(|| panic!("{reference:?}"));
        assert!(src[at..].starts_with(expect), "{reference:?} vs {expect}");
    }
    // block params live inside the block
    assert_eq!(
        refs("{{#each inputs.l as |x i|}}{{x.name}}{{i}}{{/each}}"),
        vec![r("inputs.l", false), r("x.name", true), r("i", true)]
    );
}

#[test]
fn analyze_offsets_skip_comments_escapes_and_raw_blocks() {
    let src = "{{!-- {{a}} --}}{{! {{b}} }}\\{{c}}{{{{raw}}}}{{d}}{{{{/raw}}}}{{e}} {{e}} {{{f}}}";
    let a = analyze(src).unwrap();
    assert_eq!(refs(src), vec![r("e", false), r("e", false), r("f", false)]);
    let offsets: Vec<usize> = a.references.iter().map(|r| r.offset.unwrap()).collect();
    let first = src.find("{{e}}").unwrap() + 2;
    let second = src.rfind("{{e}}").unwrap() + 2;
    assert_eq!(
        offsets,
        vec![first, second, src.find("{{{f}}}").unwrap() + 3]
    );
    assert_eq!(a.helpers, vec!["raw"]);
    // strings containing braces inside tags do not confuse the scan
    let src = "{{default x \"}}\"}}{{y}}";
    let a = analyze(src).unwrap();
    assert_eq!(a.references[1].offset, Some(src.rfind('y').unwrap()));
}

#[test]
fn analyze_syntax_errors() {
    for src in [
        "{{",
        "{{#if x}}",
        "{{/if}}",
        "{{foo bar=}}",
        "{{a b c",
        "{{foo (bar)",
    ] {
        let e = analyze(src).unwrap_err();
        assert!(!e.message.is_empty(), "{src}");
        assert!(e.offset.is_some_and(|o| o <= src.len()), "{src}: {e:?}");
    }
    let e = analyze("{{#if a}}x{{/with}}").unwrap_err();
    assert_eq!(e.offset, Some(10));
}

#[test]
fn helpers_list_matches_the_registry() {
    for h in HELPERS {
        if let Err(e) = render_str(&format!("{{{{{h} 1 2}}}}!"), &ctx()) {
            assert!(!e.message.starts_with("unknown helper"), "{h}: {e:?}");
        }
    }
    assert!(registry().strict_mode());
}

// ---- truthiness -------------------------------------------------------------------------

#[test]
fn truthy_table() {
    for v in [
        json!(false),
        json!(null),
        json!(""),
        json!("  "),
        json!(0),
        json!(0.0),
        json!("0"),
        json!("false"),
        json!("FALSE"),
        json!(" False\n"),
        json!([]),
        json!({}),
    ] {
        assert!(!truthy(&v), "{v} should be false");
    }
    for v in [
        json!(true),
        json!(1),
        json!(-1),
        json!(0.1),
        json!("true"),
        json!("no"),
        json!("null"),
        json!("00"),
        json!("x"),
        json!([0]),
        json!({"a": null}),
    ] {
        assert!(truthy(&v), "{v} should be true");
    }
}

#[test]
fn each_and_with_on_empty_values() {
    let c = json!({"inputs": {"none": null, "no": false, "empty": "", "list": [], "obj": {}, "s": "x", "n": 3}});
    for src in [
        "{{#each inputs.none}}x{{/each}}",
        "{{#each inputs.list}}x{{/each}}",
        "{{#each inputs.obj}}x{{/each}}",
        "{{#each inputs.empty}}x{{/each}}",
        "{{#with inputs.none}}x{{/with}}",
        "{{#with inputs.no}}x{{/with}}",
        "{{#with inputs.list}}x{{/with}}",
        "{{#if true}}{{#with inputs.none}}{{#each inputs.none}}x{{/each}}{{/with}}{{/if}}",
    ] {
        assert_eq!(render_str(src, &c).unwrap(), json!(""), "{src}");
    }
    assert_eq!(
        render_str("{{#each inputs.none}}x{{else}}none{{/each}}", &c).unwrap(),
        json!("none")
    );
    assert_eq!(
        render_str("{{#each inputs.nope}}x{{/each}}", &c)
            .unwrap_err()
            .message,
        "`inputs.nope` is not defined"
    );
    assert_eq!(
        render_str("{{#each inputs.s}}x{{/each}}", &c)
            .unwrap_err()
            .message,
        "`inputs.s` is a string: `each` needs a list or an object"
    );
    assert_eq!(
        render_str("{{#each inputs.n}}x{{/each}}", &c)
            .unwrap_err()
            .message,
        "`inputs.n` is a number: `each` needs a list or an object"
    );
}
