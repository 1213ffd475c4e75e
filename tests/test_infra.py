"""The deployment (infra/, azure.yaml, local.settings.sample.json) checked against the code it deploys.

No Bicep compiler runs here, so pycep-parser's syntax tree stands in for one:
every file must parse; the app settings the Bicep sets must be exactly ones the
gateway (shared/catalog.py) or the Functions runtime reads; every role the code
needs must be assigned to the app's identity; and the JSON settings the Bicep
builds (GATEWAY_BACKENDS, GATEWAY_CACHE, GATEWAY_PRICES) must pass the
gateway's own parsers, computed by a small evaluator of Bicep expressions.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML comes with uvicorn[standard] (requirements-dev.txt)
from pycep import BicepParser

from local.ncrontab import Schedule
from shared.catalog import BY_NAME, CATALOG
from shared.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Settings the Functions runtime reads in Azure, not the gateway, so not in the catalog.
RUNTIME_SETTINGS = {
    "AzureWebJobsStorage__credential": "host storage through the managed identity, no connection string",
    "AzureWebJobsStorage__clientId": "which identity (the user-assigned one)",
    "AzureWebJobsStorage__blobServiceUri": "host keys, timer leases, the deployment package",
    "AzureWebJobsStorage__tableServiceUri": "the host's diagnostic events",
    "PYTHON_ENABLE_INIT_INDEXING": "HTTP streaming through azurefunctions-extensions-http-fastapi",
}
# What `func start` reads locally. On Flex Consumption the worker runtime is functionAppConfig.runtime.
LOCAL_RUNTIME_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "PYTHON_ENABLE_INIT_INDEXING", "AzureWebJobsStorage"}
# App settings that Flex Consumption rejects or replaces with site properties (and a connection string).
NOT_ON_FLEX = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "AzureWebJobsStorage",
}
# Catalog settings (scope "app", no default) the deployment leaves unset on purpose.
UNSET_IN_AZURE = {
    "GATEWAY_STORAGE": "a connection string; the identity-based GATEWAY_STORAGE__* settings are used instead",
}
# Catalog settings that only mean something in Azure: a local run signs in as the developer, or not at all.
AZURE_ONLY = {
    "GATEWAY_STORAGE__tableServiceUri",
    "GATEWAY_STORAGE__blobServiceUri",
    "GATEWAY_STORAGE__credential",
    "GATEWAY_STORAGE__clientId",
    "GATEWAY_COSMOS__credential",
    "GATEWAY_COSMOS__clientId",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}

# Built-in role definition ids, the same in every tenant.
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
COGNITIVE_SERVICES_OPENAI_USER = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
COGNITIVE_SERVICES_USER = "a97b65f3-24c7-4388-baec-2e87135dc908"
COSMOS_DATA_CONTRIBUTOR = "00000000-0000-0000-0000-000000000002"

# Values that look like real credentials, for the sample-settings check.
SECRET_LIKE = re.compile(
    r"AccountKey=|SharedAccessSignature=|[?&]sig=|InstrumentationKey=|\bsk-[A-Za-z0-9]{16,}|\beyJ[A-Za-z0-9_-]{10,}\."
    r"|[A-Za-z0-9+/]{32,}={0,2}"
)


# --- reading Bicep ---------------------------------------------------------------------------


@functools.cache
def _parser() -> BicepParser:
    return BicepParser()


@functools.cache
def bicep(relative: str) -> dict[str, Any]:
    result: dict[str, Any] = _parser().parse(file_path=INFRA / relative)
    return result


def body(entry: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's own properties, inside any `if (...)` or `[for ...]` wrapper."""
    config: dict[str, Any] = entry["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def key(name: str) -> str:
    """An object key as written, without the quotes pycep keeps."""
    return name.strip("'")


def call(node: Any) -> dict[str, Any] | None:
    return node["function"] if isinstance(node, dict) and set(node) == {"function"} else None


def arguments(node: Any) -> dict[str, Any]:
    """The arguments of a function call node (which it must be)."""
    fn = call(node)
    assert fn is not None, f"not a function call: {node!r}"
    return dict(fn["parameters"])


def operator(node: Any) -> dict[str, Any] | None:
    return node["operator"] if isinstance(node, dict) and set(node) == {"operator"} else None


def path(node: Any) -> list[str]:
    """`a.b.c` as ["a", "b", "c"]; a bare identifier as [name]."""
    op = operator(node)
    if op is not None and op["type"] == "property_accessor":
        return [*path(op["operands"]["operand_1"]), *path(op["operands"]["operand_2"])]
    return [node] if isinstance(node, str) else []


def object_keys(node: Any, variables: dict[str, Any]) -> set[str]:
    """Keys of the object an expression builds from literals, variables, union() and `c ? a : b`."""
    if isinstance(node, str) and node in variables:
        return object_keys(variables[node]["value"], variables)
    if (fn := call(node)) is not None:
        if fn["type"] == "union":
            return set().union(*(object_keys(arg, variables) for arg in fn["parameters"].values()))
        return set()
    if (op := operator(node)) is not None:
        if op["type"] == "conditional":
            operands = op["operands"]
            return object_keys(operands["true_value"], variables) | object_keys(operands["false_value"], variables)
        return set()
    return {key(k) for k in node} if isinstance(node, dict) else set()


class Evaluator:
    """Just enough of Bicep's expression language to compute the values main.bicep builds.

    Module outputs become recognisable placeholder URLs; anything else it does not
    know raises, so a Bicep change it cannot follow fails loudly rather than passing.
    """

    def __init__(self, ast: dict[str, Any], params: dict[str, Any]) -> None:
        self.ast = ast
        self.params = params
        self.values: dict[str, Any] = {}

    def name(self, name: str) -> Any:
        if name not in self.values:
            if name in self.params:
                self.values[name] = self.params[name]
            elif name in self.ast["parameters"]:
                self.values[name] = self.eval(self.ast["parameters"][name]["default"])
            elif name in self.ast["variables"]:
                self.values[name] = self.eval(self.ast["variables"][name]["value"])
            else:
                raise KeyError(name)
        return self.values[name]

    def known(self, name: str) -> bool:
        return name in self.params or name in self.ast["parameters"] or name in self.ast["variables"]

    def reference(self, parts: list[str]) -> Any:
        if parts[0] in self.ast["modules"] and len(parts) == 3 and parts[1] == "outputs":
            return f"https://{parts[0]}-{parts[2]}.test/"
        value = self.name(parts[0])
        for part in parts[1:]:
            value = value[part]
        return value

    def text(self, value: str) -> Any:
        if self.known(value):
            return self.name(value)
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(self.reference(m.group(1).split("."))), value)

    def eval(self, node: Any) -> Any:
        if isinstance(node, str):
            return self.text(node)
        if isinstance(node, list):
            return [self.eval(item) for item in node]
        if (fn := call(node)) is not None:
            args = [self.eval(arg) for arg in fn["parameters"].values() if arg is not None]
            return self.function(fn["type"], args)
        if (op := operator(node)) is not None:
            return self.operator(op["type"], op["operands"])
        if isinstance(node, dict):
            return {self.text(key(k)): self.eval(v) for k, v in node.items()}
        return node

    @staticmethod
    def function(name: str, args: list[Any]) -> Any:
        if name == "string":
            return args[0] if isinstance(args[0], str) else json.dumps(args[0], separators=(",", ":"))
        if name == "json":
            return json.loads(args[0])
        if name == "union":
            merged: dict[str, Any] = {}
            for arg in args:
                merged.update(arg)
            return merged
        if name == "empty":
            return not args[0]
        if name == "load_json_content":
            return json.loads((INFRA / args[0]).read_text())
        if name == "concat":
            return [item for arg in args for item in arg]
        raise NotImplementedError(f"Bicep function {name}() in a value this test computes")

    def operator(self, name: str, operands: dict[str, Any]) -> Any:
        if name == "property_accessor":
            return self.reference(path({"operator": {"type": name, "operands": operands}}))
        if name == "conditional":
            branch = "true_value" if self.eval(operands["condition"]) else "false_value"
            return self.eval(operands[branch])
        if name == "equals":
            return self.eval(operands["operand_1"]) == self.eval(operands["operand_2"])
        if name == "and":
            return bool(self.eval(operands["operand_1"])) and bool(self.eval(operands["operand_2"]))
        if name == "not":
            return not self.eval(operands["bool_value"])
        raise NotImplementedError(f"Bicep operator {name} in a value this test computes")


def azd_parameters() -> dict[str, Any]:
    """main.parameters.json as azd resolves it with nothing set but the defaults written in it."""
    raw = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    resolved: dict[str, Any] = {}
    for name, entry in raw.items():
        value = entry["value"]
        match = re.fullmatch(r"\$\{([A-Z0-9_]+)(?:=([^}]*))?\}", value) if isinstance(value, str) else None
        if match and match.group(2) is not None:
            default = match.group(2)
            resolved[name] = {"true": True, "false": False}.get(default, default)
    return resolved


def main_values(**overrides: Any) -> Evaluator:
    params = {"environmentName": "test", "location": "eastus2", "principalId": "", **azd_parameters(), **overrides}
    return Evaluator(bicep("main.bicep"), params)


def deployed_settings(**overrides: Any) -> dict[str, str]:
    """Every app setting of the Function App as main.bicep and api.bicep set it (runtime expressions as markers)."""
    gateway = main_values(**overrides).name(body(bicep("main.bicep")["modules"]["api"])["params"]["appSettings"])
    runtime = bicep("app/api.bicep")["variables"]["runtimeSettings"]["value"]
    return {**gateway, **{key(k): v if isinstance(v, str) else "<expression>" for k, v in runtime.items()}}


def bicep_app_settings() -> set[str]:
    """Names of every app setting the Bicep can set on the Function App, read from the syntax tree."""
    main = bicep("main.bicep")
    from_main = object_keys(body(main["modules"]["api"])["params"]["appSettings"], main["variables"])
    api = bicep("app/api.bicep")
    [config] = [r for r in api["resources"].values() if r["type"] == "Microsoft.Web/sites/config"]
    assert body(config)["name"] == "appsettings"
    from_api = object_keys(body(config)["properties"], api["variables"])
    return from_main | from_api


# --- every file parses ---------------------------------------------------------------------------


@pytest.mark.parametrize("bicep_file", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_file_parses(bicep_file: Path) -> None:
    ast = bicep(str(bicep_file.relative_to(INFRA)))
    assert ast["resources"] or ast["modules"]


def test_every_module_main_bicep_uses_exists_and_every_file_is_used() -> None:
    used = {INFRA / "main.bicep"}
    for module in bicep("main.bicep")["modules"].values():
        target = (INFRA / module["detail"]["path"]).resolve()
        assert target.is_file(), module["detail"]["path"]
        used.add(target)
    assert set(BICEP_FILES) == used


# --- app settings, both ways ---------------------------------------------------------------------


def test_every_setting_the_code_needs_in_azure_is_set_or_has_a_default() -> None:
    names = bicep_app_settings()
    missing = [
        s.name
        for s in CATALOG
        if s.scope == "app" and s.default is None and s.name not in names and s.name not in UNSET_IN_AZURE
    ]
    assert missing == [], "set these in infra/main.bicep (gatewayBaseSettings), or give them a catalog default"


def test_every_setting_the_bicep_sets_is_read_by_the_code_or_the_runtime() -> None:
    unknown = sorted(n for n in bicep_app_settings() if n not in BY_NAME and n not in RUNTIME_SETTINGS)
    assert unknown == [], "add these to shared/catalog.py, or to RUNTIME_SETTINGS here with the reason"


def test_every_setting_a_trigger_binding_names_is_set() -> None:
    # The Functions host resolves %NAME% in bindings from app settings alone: a catalog default does not reach it.
    bound = set(re.findall(r"[\"']%([A-Za-z0-9_]+)%[\"']", (ROOT / "function_app.py").read_text()))
    assert bound, "function_app.py binds no setting: update this test"
    assert bound <= bicep_app_settings()


def test_no_local_only_or_deliberately_unset_setting_reaches_azure() -> None:
    names = bicep_app_settings()
    local_only = {s.name for s in CATALOG if s.scope != "app"}
    assert names & (local_only | set(UNSET_IN_AZURE)) == set()


def test_no_setting_flex_consumption_rejects() -> None:
    assert bicep_app_settings() & NOT_ON_FLEX == set()
    site = body(bicep("app/api.bicep")["resources"]["site"])
    assert site["properties"]["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.11"}


def test_settings_the_bicep_builds_pass_the_gateways_parsers() -> None:
    settings = deployed_settings()
    parsed = load_settings(settings)
    assert sorted((b.priority, b.auth.type) for b in parsed.backends) == [
        (1, "managed_identity"),
        (2, "managed_identity"),
    ]
    defaults = main_values()
    chat, embeddings = defaults.name("chatDeploymentName"), defaults.name("embeddingDeploymentName")
    assert all(set(b.deployments) == {chat, embeddings} for b in parsed.backends)
    assert {b.endpoint for b in parsed.backends} == {
        "https://openAiPrimary-endpoint.test",
        "https://openAiSecondary-endpoint.test",
    }
    assert set(parsed.prices) == {chat, embeddings}
    assert settings["GATEWAY_ADMIN_KEY"].startswith("@Microsoft.KeyVault(SecretUri=")
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"].startswith("Authorization=AAD;ClientId=")
    for name in ("GATEWAY_STORAGE__credential", "GATEWAY_COSMOS__credential", "AzureWebJobsStorage__credential"):
        assert settings[name] == "managedidentity"
    assert settings["PYTHON_ENABLE_INIT_INDEXING"] == "1"
    Schedule.parse(settings["GATEWAY_PROBE_SCHEDULE"])


def test_cache_settings_the_bicep_builds_pass_the_cache_parser() -> None:
    from shared.cache.config import CacheConfig

    settings = deployed_settings()
    deployments = load_settings(settings).deployments
    config = CacheConfig.parse(json.loads(settings["GATEWAY_CACHE"]), deployments)
    defaults = main_values()
    assert config.embedder == defaults.name("embeddingDeploymentName")
    assert config.dimensions == defaults.name("embeddingDimensions")
    assert config.vector_index == defaults.name("cacheVectorIndexType")
    assert config.ttl_seconds == defaults.name("cacheTtlSeconds")

    other_model = deployed_settings(embeddingDimensions=3072)
    assert CacheConfig.parse(json.loads(other_model["GATEWAY_CACHE"]), deployments).dimensions == 3072
    assert "GATEWAY_CACHE" not in deployed_settings(cacheEnabled=False)


def test_content_safety_settings_the_bicep_builds_pass_the_parser() -> None:
    assert "GATEWAY_CONTENT_SAFETY" not in deployed_settings()
    config = load_settings(deployed_settings(contentSafetyEnabled=True)).content_safety
    assert config is not None
    assert config.endpoint == "https://contentSafety-endpoint.test"
    assert config.api_key is None  # managed identity: the account's keys are off
    account = body(bicep("app/contentsafety.bicep")["resources"]["account"])
    assert account["kind"] == "ContentSafety"
    assert account["properties"]["disableLocalAuth"] is True
    rbac = body(bicep("main.bicep")["modules"]["rbac"])["params"]
    assert "contentSafety" in json.dumps(rbac["contentSafetyName"])


def test_cosmos_container_matches_the_store() -> None:
    from shared.stores import cosmos as store

    account = bicep("app/cosmos.bicep")["resources"]
    capabilities = {c["name"] for c in body(account["account"])["properties"]["capabilities"]}
    assert {"EnableServerless", "EnableNoSQLVectorSearch"} <= capabilities
    container = body(account["account__database__container"])["properties"]["resource"]
    assert container["partitionKey"]["paths"] == [store.PARTITION_KEY_PATH]
    assert isinstance(container["defaultTtl"], str), "defaultTtl must be on (a parameter), or items never expire"
    index = container["indexingPolicy"]
    expected = store.indexing_policy("quantizedFlat")
    assert index["includedPaths"] == expected["includedPaths"]
    assert index["excludedPaths"] == expected["excludedPaths"]
    assert [v["path"] for v in index["vectorIndexes"]] == [v["path"] for v in expected["vectorIndexes"]]
    [embedding] = container["vectorEmbeddingPolicy"]["vectorEmbeddings"]
    [expected_embedding] = store.vector_embedding_policy(1536)["vectorEmbeddings"]
    assert {k: v for k, v in embedding.items() if k != "dimensions"} == {
        k: v for k, v in expected_embedding.items() if k != "dimensions"
    }
    allowed = bicep("app/cosmos.bicep")["parameters"]["vectorIndexType"]["decorators"]
    assert {"type": "allowed", "argument": ["quantizedFlat", "diskANN"]} in allowed


# --- private networking -------------------------------------------------------------------------

# The module of each service the gateway calls, and the file that deploys it.
PRIVATE_SERVICES = {
    "storage": "app/storage.bicep",
    "cosmos": "app/cosmos.bicep",
    "openAiPrimary": "app/openai.bicep",
    "openAiSecondary": "app/openai.bicep",
    "keyVault": "app/keyvault.bicep",
    "contentSafety": "app/contentsafety.bicep",
}


# The module parameters these tests compute (names and locations need functions the evaluator leaves out).
NETWORK_PARAMS = {
    "publicNetworkAccess",
    "networkDefaultAction",
    "virtualNetworkSubnetId",
    "promptLogContainerName",
    "promptLogRetentionDays",
}


def module_params(module: str, **overrides: Any) -> dict[str, Any]:
    """A main.bicep module's network and audit-log parameters as deployed with these main parameters."""
    values = main_values(**overrides)
    params = body(bicep("main.bicep")["modules"][module])["params"]
    return {name: values.eval(value) for name, value in params.items() if name in NETWORK_PARAMS}


def only_resource(relative: str, resource_type: str) -> dict[str, Any]:
    [found] = [body(r) for r in bicep(relative)["resources"].values() if r["type"] == resource_type]
    return found


@pytest.mark.parametrize("private", [False, True])
def test_every_service_is_public_or_private_as_the_deployment_says(private: bool) -> None:
    for module, relative in PRIVATE_SERVICES.items():
        params = module_params(module, privateNetworking=private, contentSafetyEnabled=True)
        assert params["publicNetworkAccess"] == ("Disabled" if private else "Enabled"), module
        if "networkDefaultAction" in params:
            assert params["networkDefaultAction"] == ("Deny" if private else "Allow"), module
        # The module passes the parameter on, and defaults to private when reused without one.
        declared = bicep(relative)["parameters"]
        assert declared["publicNetworkAccess"]["default"] == "Disabled", relative
        resource = next(
            body(r)
            for r in bicep(relative)["resources"].values()
            if "publicNetworkAccess" in body(r).get("properties", {})
        )
        assert resource["properties"]["publicNetworkAccess"] == "publicNetworkAccess", relative
        acls = resource["properties"].get("networkAcls")
        if acls is not None and "networkDefaultAction" in declared:
            assert acls["defaultAction"] == "networkDefaultAction", relative


@pytest.mark.parametrize(
    ("private", "public_gateway", "expected"),
    [(False, True, "Enabled"), (False, False, "Enabled"), (True, True, "Enabled"), (True, False, "Disabled")],
)
def test_the_gateway_is_reachable_publicly_or_only_from_the_network(
    private: bool, public_gateway: bool, expected: str
) -> None:
    params = module_params("api", privateNetworking=private, publicGatewayAccess=public_gateway)
    assert params["publicNetworkAccess"] == expected
    # Flex Consumption virtual network integration: outbound traffic through the delegated subnet.
    assert params["virtualNetworkSubnetId"] == ("https://network-appSubnetId.test/" if private else "")
    site = body(bicep("app/api.bicep")["resources"]["site"])["properties"]
    assert site["publicNetworkAccess"] == "publicNetworkAccess"
    assert "virtualNetworkSubnetId" in json.dumps(site["virtualNetworkSubnetId"])
    assert bicep("app/api.bicep")["parameters"]["publicNetworkAccess"]["default"] == "Disabled"
    gateway_endpoint = bicep("main.bicep")["modules"]["gatewayEndpoint"]["config"]
    assert main_values(privateNetworking=private, publicGatewayAccess=public_gateway).eval(
        gateway_endpoint["condition"]
    ) is (expected == "Disabled")


def test_the_network_has_a_delegated_app_subnet_an_endpoint_subnet_and_linked_zones() -> None:
    vnet = only_resource("app/network.bicep", "Microsoft.Network/virtualNetworks")
    subnets = {s["name"]: s["properties"] for s in vnet["properties"]["subnets"]}
    assert subnets["app"]["delegations"][0]["properties"]["serviceName"] == "Microsoft.App/environments"
    assert subnets["endpoints"]["privateEndpointNetworkPolicies"] == "Disabled"
    assert all("networkSecurityGroup" in s for s in subnets.values())
    network = bicep("app/network.bicep")["resources"]
    assert network["zones"]["config"]["loop_type"]["detail"]["array_name"] == "privateDnsZoneNames"
    link = body(network["links"])
    assert network["links"]["config"]["loop_type"]["detail"]["array_name"] == "privateDnsZoneNames"
    assert link["parent"] == {
        "operator": {"type": "index_accessor", "operands": {"operand_1": "zones", "operand_2": "i"}}
    }
    assert path(link["properties"]["virtualNetwork"]["id"]) == ["vnet", "id"]
    assert link["properties"]["registrationEnabled"] is False
    # Every zone main.bicep names is created and linked.
    zones_param = body(bicep("main.bicep")["modules"]["network"])["params"]["privateDnsZoneNames"]
    assert arguments(zones_param["loop_type"]["detail"]["array_name"]) == {"arg_1": "privateDnsZones"}


def test_every_private_endpoint_has_its_dns_zone_group_and_every_service_has_an_endpoint() -> None:
    # Private endpoints are made in one file only, each with a zone group over the same entries.
    endpoint_files = [
        f
        for f in BICEP_FILES
        for r in bicep(str(f.relative_to(INFRA)))["resources"].values()
        if r["type"] == "Microsoft.Network/privateEndpoints"
    ]
    assert [f.name for f in endpoint_files] == ["private-endpoints.bicep"]
    resources = bicep("app/private-endpoints.bicep")["resources"]
    endpoint, group = resources["endpoint"], resources["zoneGroup"]
    assert group["type"] == "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"
    assert endpoint["config"]["loop_type"]["detail"]["array_name"] == "endpoints"
    assert group["config"]["loop_type"]["detail"]["array_name"] == "endpoints"
    # Each group belongs to the endpoint of the same entry and names that entry's zone.
    assert body(group)["parent"] == {
        "operator": {"type": "index_accessor", "operands": {"operand_1": "endpoint", "operand_2": "i"}}
    }
    [config] = body(group)["properties"]["privateDnsZoneConfigs"]
    zone_id = arguments(config["properties"]["privateDnsZoneId"])
    assert zone_id["resource_type"] == "Microsoft.Network/privateDnsZones"
    assert path(zone_id["resource_name_1"]) == ["e", "zone"]

    values = main_values(privateNetworking=True, contentSafetyEnabled=True, publicGatewayAccess=False)
    services = body(bicep("main.bicep")["modules"]["privateEndpoints"])["params"]["endpoints"]
    entries = values.eval(services)
    gateway = values.eval(body(bicep("main.bicep")["modules"]["gatewayEndpoint"])["params"]["endpoints"])
    zones = values.name("privateDnsZones")
    covered = {(e["id"], e["group"]) for e in entries + gateway}
    assert covered == {
        ("https://storage-id.test/", "blob"),
        ("https://storage-id.test/", "table"),
        ("https://cosmos-id.test/", "Sql"),
        ("https://openAiPrimary-id.test/", "account"),
        ("https://openAiSecondary-id.test/", "account"),
        ("https://keyVault-id.test/", "vault"),
        ("https://contentSafety-id.test/", "account"),
        ("https://api-id.test/", "sites"),
    }
    assert all(e["zone"] in zones.values() for e in entries + gateway)
    assert len({e["name"] for e in entries + gateway}) == len(entries + gateway)
    without = main_values(privateNetworking=True, contentSafetyEnabled=False)
    assert "https://contentSafety-id.test/" not in {e["id"] for e in without.eval(services)}
    # The app starts after the endpoints it reaches storage through.
    assert "privateEndpoints" in body(bicep("main.bicep")["modules"]["api"])["dependsOn"]


def test_the_audit_log_container_and_its_retention_are_what_the_gateway_writes_to() -> None:
    settings = load_settings(deployed_settings())
    params = module_params("storage")
    assert settings.prompt_log.container == params["promptLogContainerName"] == "promptlog"
    assert settings.blob_service_uri == "https://storage-blobEndpoint.test/"
    container = body(bicep("app/storage.bicep")["resources"]["promptLogContainer"])
    assert container["name"] == "promptLogContainerName"
    assert container["properties"]["publicAccess"] == "None"
    [rule] = body(bicep("app/storage.bicep")["resources"]["lifecycle"])["properties"]["policy"]["rules"]
    assert rule["definition"]["filters"]["prefixMatch"] == ["${promptLogContainerName}/"]
    assert rule["definition"]["filters"]["blobTypes"] == ["appendBlob"]
    delete = rule["definition"]["actions"]["baseBlob"]["delete"]
    assert delete["daysAfterModificationGreaterThan"] == "promptLogRetentionDays"
    assert params["promptLogRetentionDays"] == main_values().name("promptLogRetentionDays") == 90


# --- identity and roles --------------------------------------------------------------------------


def role_assignments() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(scope resource type, role id, resource body) for every assignment in rbac.bicep."""
    rbac = bicep("app/rbac.bicep")
    roles = rbac["variables"]["roles"]["value"]
    types = {name: r["type"] for name, r in rbac["resources"].items()}
    for resource in rbac["resources"].values():
        config = body(resource)
        if resource["type"] == "Microsoft.Authorization/roleAssignments":
            role_ref = arguments(config["properties"]["roleDefinitionId"])["resource_name_1"]
            yield types[config["scope"]], roles[path(role_ref)[1]], resource
        elif resource["type"] == "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments":
            role = rbac["variables"]["cosmosDataContributor"]["value"]
            assert config["properties"]["roleDefinitionId"].endswith("/sqlRoleDefinitions/${cosmosDataContributor}")
            yield types[config["parent"]], role, resource


def test_the_app_identity_has_every_role_the_code_needs() -> None:
    assigned = {(scope, role) for scope, role, _ in role_assignments()}
    assert assigned >= {
        ("Microsoft.Storage/storageAccounts", STORAGE_BLOB_DATA_OWNER),
        ("Microsoft.Storage/storageAccounts", STORAGE_TABLE_DATA_CONTRIBUTOR),
        ("Microsoft.CognitiveServices/accounts", COGNITIVE_SERVICES_OPENAI_USER),
        ("Microsoft.Insights/components", MONITORING_METRICS_PUBLISHER),
        ("Microsoft.KeyVault/vaults", KEY_VAULT_SECRETS_USER),
        ("Microsoft.DocumentDB/databaseAccounts", COSMOS_DATA_CONTRIBUTOR),
        ("Microsoft.CognitiveServices/accounts", COGNITIVE_SERVICES_USER),
    }
    openai_scopes = [
        body(r)["scope"] for scope, _, r in role_assignments() if scope == "Microsoft.CognitiveServices/accounts"
    ]
    assert sorted(openai_scopes) == ["contentSafety", "openAiPrimary", "openAiSecondary"]


def test_every_assignment_goes_to_the_app_identity_and_optionally_the_developer() -> None:
    rbac = bicep("app/rbac.bicep")
    variables = rbac["variables"]
    assert arguments(variables["principals"]["value"]) == {
        "arg_1": "appPrincipals",
        "arg_2": "userPrincipals",
    }
    assert variables["appPrincipals"]["value"] == [{"id": "appPrincipalId", "type": "ServicePrincipal"}]
    user = operator(variables["userPrincipals"]["value"])
    assert user is not None
    assert "grantUserRoles" in json.dumps(user["operands"]["condition"])
    for _, _, resource in role_assignments():
        array = resource["config"]["loop_type"]["detail"]["array_name"]
        # An optional resource's assignments loop over `cond ? principals : []`: the same principals, or no one.
        optional = operator(array)
        if optional is not None:
            assert optional["type"] == "conditional"
            assert (optional["operands"]["true_value"], optional["operands"]["false_value"]) == ("principals", [])
        else:
            assert array == "principals"

    params = body(bicep("main.bicep")["modules"]["rbac"])["params"]
    assert path(params["appPrincipalId"]) == ["identity", "outputs", "principalId"]
    assert params["userPrincipalId"] == "principalId"
    assert params["grantUserRoles"] == "grantUserRoles"
    assert azd_parameters()["grantUserRoles"] is True


def test_every_assignment_is_named_for_its_scope_principal_and_role() -> None:
    for _, _, resource in role_assignments():
        config = body(resource)
        item = resource["config"]["loop_type"]["detail"]["item_name"]
        guid = call(config["name"])
        assert guid is not None
        assert guid["type"] == "guid"
        scope = config.get("scope") or config["parent"]
        assert path(guid["parameters"]["base_string"]) == [scope, "id"]
        assert path(guid["parameters"]["extra_string_1"]) == [item, "id"]
        role = config["properties"]["roleDefinitionId"]
        role_ref = arguments(role)["resource_name_1"] if call(role) else "cosmosDataContributor"
        assert guid["parameters"]["extra_string_2"] == role_ref


def test_the_function_app_runs_as_the_identity_that_has_the_roles() -> None:
    api = body(bicep("main.bicep")["modules"]["api"])["params"]
    assert path(api["identityId"]) == ["identity", "outputs", "id"]
    assert path(api["identityClientId"]) == ["identity", "outputs", "clientId"]
    site = body(bicep("app/api.bicep")["resources"]["site"])
    assert site["identity"]["type"] == "UserAssigned"
    assert set(site["identity"]["userAssignedIdentities"]) == {"'${identityId}'"}
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityId"
    assert site["properties"]["functionAppConfig"]["deployment"]["storage"]["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    settings = deployed_settings()
    assert settings["AZURE_CLIENT_ID"] == settings["GATEWAY_STORAGE__clientId"] == settings["GATEWAY_COSMOS__clientId"]


def test_local_auth_is_off_everywhere() -> None:
    resources = {
        r["type"]: body(r)
        for relative in ("app/storage.bicep", "app/cosmos.bicep", "app/openai.bicep", "app/monitoring.bicep")
        for r in bicep(relative)["resources"].values()
    }
    assert resources["Microsoft.Storage/storageAccounts"]["properties"]["allowSharedKeyAccess"] is False
    assert resources["Microsoft.DocumentDB/databaseAccounts"]["properties"]["disableLocalAuth"] is True
    assert resources["Microsoft.CognitiveServices/accounts"]["properties"]["disableLocalAuth"] is True
    assert resources["Microsoft.Insights/components"]["properties"]["DisableLocalAuth"] is True
    assert resources["Microsoft.OperationalInsights/workspaces"]["properties"]["features"]["disableLocalAuth"] is True
    vault = body(bicep("app/keyvault.bicep")["resources"]["vault"])
    assert vault["properties"]["enableRbacAuthorization"] is True
    publishing = [
        body(r)
        for r in bicep("app/api.bicep")["resources"].values()
        if r["type"] == "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
    ]
    assert sorted((p["name"], p["properties"]["allow"]) for p in publishing) == [("ftp", False), ("scm", False)]


def test_every_checkov_skip_carries_a_reason() -> None:
    skip = re.compile(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?")
    for bicep_file in BICEP_FILES:
        for number, line in enumerate(bicep_file.read_text().splitlines(), 1):
            if match := skip.search(line):
                assert (match.group(2) or "").strip(), f"{bicep_file.name}:{number}: {match.group(1)} has no reason"


# --- azd ------------------------------------------------------------------------------------------


def test_azure_yaml_points_at_what_exists() -> None:
    config = yaml.safe_load((ROOT / "azure.yaml").read_text())
    api = config["services"]["api"]
    assert (api["host"], api["language"]) == ("function", "python")
    project = ROOT / api["project"]
    for needed in ("function_app.py", "host.json", "requirements.txt", ".funcignore"):
        assert (project / needed).is_file(), needed
    infra = config.get("infra", {})
    assert (ROOT / infra.get("path", "infra") / f"{infra.get('module', 'main')}.bicep").is_file()
    hooks = config["hooks"]["postprovision"]
    for platform in ("posix", "windows"):
        assert hooks[platform]["shell"] in ("sh", "pwsh"), "azd needs the shell named"
        assert (ROOT / hooks[platform]["run"]).is_file(), hooks[platform]["run"]
    assert (INFRA / "scripts" / "postprovision.py").is_file()


def test_main_parameters_match_main_bicep() -> None:
    declared = bicep("main.bicep")["parameters"]
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(given) <= set(declared)
    generated = {
        name
        for name, p in declared.items()
        if any(
            d["type"] == "metadata" and d["argument"].get("azd", {}).get("type") == "generate" for d in p["decorators"]
        )
    }
    required = {name for name, p in declared.items() if p["default"] is None}
    assert required - set(given) == generated == {"gatewayAdminKey"}
    assert {"environmentName", "location", "principalId", "openAiPrimaryLocation", "openAiSecondaryLocation"} <= set(
        given
    )


def test_outputs_give_azd_and_the_hook_what_they_read() -> None:
    outputs = set(bicep("main.bicep")["outputs"])
    hook = (INFRA / "scripts" / "postprovision.py").read_text()
    from_azure = re.search(r"FROM_AZURE = \(([^)]*)\)", hook)
    assert from_azure is not None
    read = set(re.findall(r'"([A-Z0-9_]+)"', from_azure.group(1))) | {"GATEWAY_URL", "GATEWAY_CHAT_DEPLOYMENT"}
    assert read <= outputs
    assert {"AZURE_FUNCTION_NAME", "SERVICE_API_URI", "AZURE_RESOURCE_GROUP"} <= outputs


def test_workbook_is_valid_json_and_is_what_monitoring_deploys() -> None:
    workbook = body(bicep("app/monitoring.bicep")["resources"]["workbook"])
    loaded = call(workbook["properties"]["serializedData"])
    assert loaded is not None
    assert loaded["type"] == "load_text_content"
    content = json.loads((INFRA / "app" / loaded["parameters"]["file_path"]).read_text())
    assert content["version"] == "Notebook/1.0"
    assert any(tile.get("type") == 3 for tile in workbook_items(content["items"])), "at least one query tile"


def workbook_items(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every item of a workbook, those inside groups (type 12) included."""
    for item in items:
        yield item
        if item.get("type") == 12:
            yield from workbook_items(item.get("content", {}).get("items", []))


# --- local settings --------------------------------------------------------------------------------


def sample_values() -> dict[str, str]:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())
    assert sample["IsEncrypted"] is False
    values: dict[str, str] = sample["Values"]
    return values


def test_sample_settings_hold_every_setting_a_local_run_reads() -> None:
    values = sample_values()
    local_reads = {s.name for s in CATALOG if s.scope in ("app", "local")} - AZURE_ONLY
    assert sorted(local_reads - set(values)) == []
    assert set(values) >= LOCAL_RUNTIME_SETTINGS


def test_sample_settings_are_only_known_settings() -> None:
    values = sample_values()
    key_settings = {b["auth"]["setting"] for b in json.loads(values["GATEWAY_BACKENDS"]) if "setting" in b["auth"]}
    unknown = set(values) - set(BY_NAME) - LOCAL_RUNTIME_SETTINGS - key_settings
    assert unknown == set()


def test_sample_settings_are_safe_local_values() -> None:
    values = sample_values()
    assert [name for name, value in values.items() if SECRET_LIKE.search(value)] == []
    assert values["AzureWebJobsStorage"] == values["GATEWAY_STORAGE"] == "UseDevelopmentStorage=true"
    for backend in json.loads(values["GATEWAY_BACKENDS"]):
        assert backend["endpoint"].startswith("http://127.0.0.1:")
    assert not values["GATEWAY_COSMOS__accountEndpoint"]


def test_sample_settings_pass_the_gateways_parsers() -> None:
    from shared.cache.config import CacheConfig

    settings = load_settings(sample_values())
    CacheConfig.parse(json.loads(sample_values()["GATEWAY_CACHE"]), settings.deployments)
    Schedule.parse(settings.probe_schedule)


def test_http_concurrency_per_instance_is_set_from_a_parameter_wired_through_main() -> None:
    # Unset, Flex Consumption allows a Python app one HTTP request per instance at a time.
    api = bicep("app/api.bicep")
    scale = body(api["resources"]["site"])["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale["triggers"]["http"]["perInstanceConcurrency"] == "httpPerInstanceConcurrency"
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"
    assert scale["instanceMemoryMB"] == "instanceMemoryMB"
    main = bicep("main.bicep")
    module = body(main["modules"]["api"])["params"]
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name in ("httpPerInstanceConcurrency", "maximumInstanceCount", "instanceMemoryMB"):
        assert module[name] == name
        assert name in given
        assert main["parameters"][name]["default"] == api["parameters"][name]["default"]
        assert f"={main['parameters'][name]['default']}}}" in given[name]["value"]  # azd's default is the Bicep's
    concurrency = main["parameters"]["httpPerInstanceConcurrency"]["default"]
    assert 16 <= concurrency <= 1000
    # The gateway's own slots per backend must not be what limits an instance the platform sends this many to.
    assert int(BY_NAME["GATEWAY_MAX_CONNECTIONS_PER_BACKEND"].default or 0) >= concurrency


def test_entra_parameters_become_settings_the_gateway_parses() -> None:
    tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    off = load_settings(deployed_settings())
    assert off.entra is None
    assert off.admin_key_enabled
    on = load_settings(
        deployed_settings(
            entraTenantId=tenant, gatewayAppIdUri="api://aoai-gateway", gatewayAppClientId="abc", adminKeyEnabled=False
        )
    )
    assert on.entra is not None
    assert on.entra.audiences == ("api://aoai-gateway", "abc")
    assert on.entra.issuers[0] == f"https://sts.windows.net/{tenant}/"
    assert on.entra.admin_role == "Gateway.Admin"
    assert not on.admin_key_enabled
