//! OpenAPI links: what a created object's answer lets a client call next
//! (a new tenant's namespaces, a new cluster's preheat jobs, …), so that
//! generated clients and property-based testers such as schemathesis can
//! follow the API from one call to the next.

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::{OpenApi, RefOr};
use utoipa::Modify;

/// `(operation answering, status, link name, operation linked to, parameters)`.
type LinkSpec = (&'static str, &'static str, &'static str, &'static str, &'static [(&'static str, &'static str)]);

const TENANT: (&str, &str) = ("tenant", "$response.body#/name");
const SAME_TENANT: (&str, &str) = ("tenant", "$request.path.tenant");

const LINKS: &[LinkSpec] = &[
    ("createTenant", "201", "GetTenant", "getTenant", &[TENANT]),
    ("createTenant", "201", "ListNamespaces", "listNamespaces", &[TENANT]),
    ("createTenant", "201", "CreateNamespace", "createNamespace", &[TENANT]),
    ("createTenant", "201", "ListMembers", "listMembers", &[TENANT]),
    ("createTenant", "201", "GrantRole", "grantRole", &[TENANT]),
    ("createTenant", "201", "RevokeRole", "revokeRole", &[TENANT]),
    ("createTenant", "201", "ListRobots", "listRobots", &[TENANT]),
    ("createTenant", "201", "CreateRobot", "createRobot", &[TENANT]),
    ("createTenant", "201", "ListClusters", "listClusters", &[TENANT]),
    ("createTenant", "201", "CreateCluster", "createCluster", &[TENANT]),
    ("createNamespace", "201", "GetNamespace", "getNamespace", &[("namespace", "$response.body#/name")]),
    ("createNamespace", "201", "UpdateNamespace", "updateNamespace", &[("namespace", "$response.body#/name")]),
    ("createRobot", "201", "RotateRobotToken", "rotateRobotToken", &[SAME_TENANT, ("robot", "$response.body#/name")]),
    ("createRobot", "201", "RevokeRobot", "revokeRobot", &[SAME_TENANT, ("robot", "$response.body#/name")]),
    ("createCluster", "201", "ListPreheats", "listPreheats", &[SAME_TENANT, ("cluster", "$response.body#/name")]),
    ("createCluster", "201", "StartPreheat", "startPreheat", &[SAME_TENANT, ("cluster", "$response.body#/name")]),
    (
        "startPreheat",
        "202",
        "ShowPreheat",
        "showPreheat",
        &[SAME_TENANT, ("cluster", "$request.path.cluster"), ("job", "$response.body#/id")],
    ),
    ("createUser", "201", "SetPassword", "setPassword", &[("username", "$response.body#/username")]),
];

/// Adds [`LINKS`] to the answers they start from.
pub struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let id = operation.operation_id.clone().unwrap_or_default();
                for (_, status, name, target, parameters) in LINKS.iter().filter(|l| l.0 == id) {
                    let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) else {
                        continue;
                    };
                    // utoipa 5.5 writes `Link::operation_id` as `operation_id`, which
                    // no OpenAPI reader knows; the field the spec names goes in by hand.
                    let spelled = Extensions::from_iter([("operationId", *target)]);
                    let link = parameters
                        .iter()
                        .fold(LinkBuilder::new().extensions(Some(spelled)), |link, (p, v)| link.parameter(*p, *v))
                        .build();
                    response.links.insert((*name).to_owned(), RefOr::T(link));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::LINKS;

    #[test]
    fn every_link_joins_two_operations_of_the_document() {
        let doc = serde_json::to_value(super::super::ApiDoc::openapi()).expect("the document");
        let operations: Vec<&serde_json::Value> = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|p| p.as_object().expect("ops").values())
            .collect();
        let by_id = |id: &str| operations.iter().find(|o| o["operationId"] == id).copied();
        for (from, status, name, to, parameters) in LINKS {
            let source = by_id(from).unwrap_or_else(|| panic!("no operation {from}"));
            assert_eq!(source["responses"][status]["links"][name]["operationId"], *to, "{from} {status} {name}");
            let target = by_id(to).unwrap_or_else(|| panic!("no operation {to}"));
            let target_parameters: Vec<&str> =
                target["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
            for (p, _) in *parameters {
                assert!(target_parameters.contains(p), "{to} has no parameter {p}");
            }
        }
    }
}
