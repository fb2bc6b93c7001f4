"""The security checker for sam/template.yaml, used by checks/test_sam.py: reads the template
(short tags such as !Ref/!Sub/!If parsed as data), resolves it for a few parameter sets, runs
the SAM translator in-process (offline, no managed policy lookups) and raises SamSecurityError
on any lost property."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "sam" / "template.yaml"

ACCOUNT = "123456789012"
REGION = "us-east-1"
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "hello-stack",
}
API_ID = "api0id"  # what Ref Api resolves to while rendering
ROLE_ARN_RE = re.compile(r"arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/([\w+=,.@-]+/)*[\w+=,.@-]{1,64}")

POD_ROLE_ARN = "arn:aws:iam::111111111111:role/orders-pod"
VPCE_IDS = "vpce-0abc123de4f5a6b7c,vpce-11112222333344445"
OIDC_URL = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"

# Parameter sets the template must be secure under.
SCENARIOS = {
    "irsa": {"TrustedPrincipalArn": POD_ROLE_ARN},
    "irsa-external-id": {"TrustedPrincipalArn": POD_ROLE_ARN, "ExternalId": "orders-7f3a"},
    "pod-identity": {"TrustedPrincipalArn": POD_ROLE_ARN, "TrustedPrincipalIsPodIdentity": "true"},
    "create-pod-role": {
        "CreatePodRole": "true",
        "OidcProviderUrl": OIDC_URL,
        "ServiceAccountNamespace": "orders",
        "ServiceAccountName": "orders-api",
        "StageName": "v1",
        "ExternalId": "orders-7f3a",
    },
    "private": {"TrustedPrincipalArn": POD_ROLE_ARN, "EndpointType": "PRIVATE", "VpcEndpointIds": VPCE_IDS},
    "private-create-pod-role": {
        "CreatePodRole": "true",
        "OidcProviderUrl": OIDC_URL,
        "EndpointType": "PRIVATE",
        "VpcEndpointIds": "vpce-0abc123de4f5a6b7c",
        "StageName": "v1",
    },
}


class SamSecurityError(AssertionError):
    """A security property of the SAM template does not hold."""


def sam_require(ok: bool, message: str) -> None:
    if not ok:
        raise SamSecurityError(message)


# --------------------------------------------------------------------------------------------
# Loading: CloudFormation YAML with short tags, as plain data in the long (JSON) form.


class SamCfnLoader(yaml.SafeLoader):
    pass


def _sam_construct_tag(loader: SamCfnLoader, tag_suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + tag_suffix: value}


SamCfnLoader.add_multi_constructor("!", _sam_construct_tag)


def sam_load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=SamCfnLoader)  # noqa: S506 (SafeLoader subclass)


def sam_dump(template: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(template, sort_keys=False, width=1000))
    return path


# --------------------------------------------------------------------------------------------
# Rendering: parameters, conditions and intrinsic functions resolved for one parameter set.

_NO_VALUE = object()


def sam_param_values(template: dict, overrides: dict) -> dict:
    """Parameter values as CloudFormation hands them to the SAM transform: defaults, then the
    overrides; a CommaDelimitedList as a list."""
    values = {name: str(p.get("Default", "")) for name, p in template.get("Parameters", {}).items()}
    values.update(overrides)
    for name, p in template.get("Parameters", {}).items():
        if p.get("Type") == "CommaDelimitedList":
            values[name] = values[name].split(",")
    return values


def sam_params(template: dict, overrides: dict) -> dict:
    values = sam_param_values(template, overrides)
    values.update(PSEUDO)
    return values


def sam_condition(expr, template: dict, params: dict) -> bool:
    if isinstance(expr, bool):
        return expr
    (fn, arg), = expr.items()
    if fn == "Condition":
        return sam_condition(template["Conditions"][arg], template, params)
    if fn == "Fn::Equals":
        a, b = (sam_resolve(x, template, params) for x in arg)
        return str(a) == str(b)
    if fn == "Fn::Not":
        return not sam_condition(arg[0], template, params)
    if fn == "Fn::And":
        return all(sam_condition(x, template, params) for x in arg)
    if fn == "Fn::Or":
        return any(sam_condition(x, template, params) for x in arg)
    if fn == "Fn::Contains":  # Rules only: [list, value]
        members, value = (sam_resolve(x, template, params) for x in arg)
        return value in members
    if fn == "Fn::EachMemberEquals":  # Rules only: [list, value]
        members, value = (sam_resolve(x, template, params) for x in arg)
        return all(m == value for m in members)
    raise ValueError(f"unsupported condition function {fn}")


def _sam_ref(name: str, template: dict, params: dict) -> str:
    if name in params:
        return params[name]
    sam_require(name in template.get("Resources", {}), f"Ref to unknown {name}")
    return API_ID if name == "Api" else f"{name.lower()}0id"


def _sam_getatt(name: str, attr: str, template: dict) -> str:
    resource = template["Resources"].get(name)
    sam_require(resource is not None, f"GetAtt of unknown resource {name}")
    if resource["Type"] == "AWS::IAM::Role" and attr == "Arn":
        return f"arn:aws:iam::{ACCOUNT}:role/{PSEUDO['AWS::StackName']}-{name}-GENERATED"
    return f"{name}.{attr}"


def _sam_sub(text: str, variables: dict, template: dict, params: dict) -> str:
    def repl(m: re.Match) -> str:
        var = m.group(1)
        if var.startswith("!"):
            return "${" + var[1:] + "}"
        if var in variables:
            return str(variables[var])
        if "." in var and var.split(".", 1)[0] in template.get("Resources", {}):
            return _sam_getatt(*var.split(".", 1), template)
        return str(_sam_ref(var, template, params))

    return re.sub(r"\$\{([^}]+)\}", repl, text)


def sam_resolve(node, template: dict, params: dict):
    if isinstance(node, list):
        out = [sam_resolve(x, template, params) for x in node]
        return [x for x in out if x is not _NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (key, arg), = node.items()
        if key == "Ref":
            return _NO_VALUE if arg == "AWS::NoValue" else _sam_ref(arg, template, params)
        if key == "Fn::GetAtt":
            return _sam_getatt(arg[0], arg[1], template)
        if key == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            variables = {k: sam_resolve(v, template, params) for k, v in variables.items()}
            return _sam_sub(text, variables, template, params)
        if key == "Fn::If":
            branch = arg[1] if sam_condition({"Condition": arg[0]}, template, params) else arg[2]
            return sam_resolve(branch, template, params)
        if key == "Fn::Join":
            parts = sam_resolve(arg[1], template, params)
            return arg[0].join(str(p) for p in parts)
        if key.startswith("Fn::"):
            raise ValueError(f"unsupported intrinsic {key}")
    out = {k: sam_resolve(v, template, params) for k, v in node.items()}
    return {k: v for k, v in out.items() if v is not _NO_VALUE}


def sam_render(template: dict, overrides: dict) -> dict:
    """Resources and Outputs that exist for these parameters, fully resolved."""
    params = sam_params(template, overrides)
    rendered = {"Resources": {}, "Outputs": {}}
    for section in ("Resources", "Outputs"):
        for name, body in template.get(section, {}).items():
            cond = body.get("Condition")
            if cond is not None and not sam_condition({"Condition": cond}, template, params):
                continue
            rendered[section][name] = sam_resolve(body, template, params)
    return rendered


def sam_rules_violations(template: dict, overrides: dict) -> list[str]:
    params = sam_params(template, overrides)
    failed = []
    for name, rule in template.get("Rules", {}).items():
        if "RuleCondition" in rule and not sam_condition(rule["RuleCondition"], template, params):
            continue
        for assertion in rule["Assertions"]:
            if not sam_condition(assertion["Assert"], template, params):
                failed.append(f"{name}: {assertion.get('AssertDescription', '')}")
    return failed


# --------------------------------------------------------------------------------------------
# The SAM transform, in-process and offline.


def sam_transform(template: dict, parameter_values: dict | None = None) -> dict:
    from boto3.session import Session
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    tpl = copy.deepcopy(template)
    for resource in tpl["Resources"].values():
        props = resource.get("Properties", {})
        # What `sam validate` does too: a local CodeUri becomes a placeholder S3 location.
        if resource["Type"] == "AWS::Serverless::Function" and not str(props.get("CodeUri", "s3://")).startswith("s3://"):
            props["CodeUri"] = "s3://bucket/key"

    def no_managed_policy_lookups():
        raise SamSecurityError("the transform wanted to list IAM managed policies (needs AWS)")

    translator = Translator(None, Parser(), boto_session=Session(region_name=REGION))
    return translator.translate(tpl, parameter_values=parameter_values or {},
                                get_managed_policy_map=no_managed_policy_lookups)


# --------------------------------------------------------------------------------------------
# The security properties.


def _as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def _policy_doc(doc) -> dict:
    return json.loads(doc) if isinstance(doc, str) else doc


def _single_statement(doc, what: str) -> dict:
    doc = _policy_doc(doc)
    statements = _as_list(doc.get("Statement", []))
    sam_require(len(statements) == 1, f"{what}: exactly one statement expected, got {len(statements)}")
    st = statements[0]
    sam_require(st.get("Effect") == "Allow", f"{what}: statement is not Effect Allow")
    for key in ("NotPrincipal", "NotAction", "NotResource"):
        sam_require(key not in st, f"{what}: {key} is not allowed")
    return st


def _policies_attached_to(resources: dict, role: str, role_name_value: str) -> list[tuple[str, dict]]:
    """Separate policy resources (AWS::IAM::Policy/RolePolicy/ManagedPolicy) that reach the role."""
    found = []
    for name, res in resources.items():
        props = res.get("Properties", {})
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            if role_name_value in _as_list(props.get("Roles", [])):
                found.append((name, res))
        elif res["Type"] == "AWS::IAM::RolePolicy" and props.get("RoleName") == role_name_value:
            found.append((name, res))
    return found


def sam_check_parameter_patterns(template: dict) -> None:
    params = template["Parameters"]

    def pattern(name):
        p = params[name].get("AllowedPattern")
        sam_require(p is not None, f"parameter {name} needs an AllowedPattern")
        return re.compile(p)

    principal = pattern("TrustedPrincipalArn")
    for good in (POD_ROLE_ARN, "arn:aws:iam::111111111111:role/eks/orders-pod", "arn:aws-cn:iam::111111111111:role/x"):
        sam_require(principal.fullmatch(good) is not None, f"TrustedPrincipalArn pattern rejects {good}")
    for bad in ("*", "arn:aws:iam::111111111111:root", "arn:aws:iam::111111111111:role/*", "arn:aws:iam::*:role/x",
                "111111111111", "arn:aws:iam::111111111111:user/x", "arn:aws:iam::111111111111:role/a*b",
                "arn:aws:sts::111111111111:assumed-role/x/y"):
        sam_require(principal.fullmatch(bad) is None, f"TrustedPrincipalArn pattern accepts {bad!r}")
    stage = pattern("StageName")
    sam_require(stage.fullmatch("Prod") is not None, "StageName pattern rejects Prod")
    for bad in ("*", "Prod/*", "Pr?d", "Prod/GET", ""):
        sam_require(stage.fullmatch(bad) is None, f"StageName pattern accepts {bad!r}")
    for name in ("ServiceAccountNamespace", "ServiceAccountName"):
        p = pattern(name)
        for bad in ("*", "orders*", "a:b", "A"):
            sam_require(p.fullmatch(bad) is None, f"{name} pattern accepts {bad!r}")
    vpce = pattern("VpcEndpointIds")
    for good in ("", "vpce-0abc123de4f5a6b7c", "vpce-1a2b3c4d"):
        sam_require(vpce.fullmatch(good) is not None, f"VpcEndpointIds pattern rejects {good!r}")
    for bad in ("*", "vpce-*", "vpce-0abc123de4f5a6b7c*", "vpc-0abc123d", "vpce-0ABC123DE"):
        sam_require(vpce.fullmatch(bad) is None, f"VpcEndpointIds pattern accepts {bad!r}")
    oidc = pattern("OidcProviderUrl")
    sam_require(oidc.fullmatch(OIDC_URL) is not None, "OidcProviderUrl pattern rejects an EKS issuer")
    for bad in ("https://" + OIDC_URL, "*", OIDC_URL + "*"):
        sam_require(oidc.fullmatch(bad) is None, f"OidcProviderUrl pattern accepts {bad!r}")


def sam_check_api_source(template: dict) -> None:
    """Intent as written: the event's effective authorizer is AWS_IAM and InvokeRole NONE."""
    resources = template["Resources"]
    events = [
        (fname, ev)
        for fname, f in resources.items() if f["Type"] == "AWS::Serverless::Function"
        for ev in f.get("Properties", {}).get("Events", {}).values()
        if ev.get("Type") == "Api"
    ]
    hello = [(f, ev) for f, ev in events if ev["Properties"].get("Path") == "/hello-world"
             and str(ev["Properties"].get("Method", "")).lower() == "get"]
    sam_require(len(hello) == 1, "exactly one GET /hello-world Api event expected")
    for _, ev in events:
        props = ev["Properties"]
        api_ref = props.get("RestApiId")
        sam_require(isinstance(api_ref, dict) and "Ref" in api_ref,
                    "every Api event needs RestApiId (an implicit API has no IAM auth)")
        api = resources[api_ref["Ref"]]["Properties"]
        api_auth = api.get("Auth", {})
        ev_auth = props.get("Auth", {})
        authorizer = ev_auth.get("Authorizer", api_auth.get("DefaultAuthorizer"))
        invoke_role = ev_auth.get("InvokeRole", api_auth.get("InvokeRole"))
        sam_require(authorizer == "AWS_IAM", f"{props.get('Path')}: authorizer is {authorizer!r}, not AWS_IAM")
        sam_require(invoke_role == "NONE", f"{props.get('Path')}: InvokeRole is {invoke_role!r}, not NONE")


def sam_check_api_transformed(transformed: dict) -> None:
    """What API Gateway gets: every method AWS_IAM (SigV4), no integration credentials."""
    resources = transformed["Resources"]
    apis = {n: r for n, r in resources.items() if r["Type"] == "AWS::ApiGateway::RestApi"}
    sam_require(len(apis) == 1, f"exactly one REST API expected, got {sorted(apis)}")
    for name, r in resources.items():
        sam_require(r["Type"] not in ("AWS::Lambda::Url", "AWS::ApiGatewayV2::Api"),
                    f"{name}: {r['Type']} would reach the Lambda without the IAM-protected REST API")
    for name, r in resources.items():
        if r["Type"] == "AWS::ApiGateway::Method":
            sam_require(r["Properties"].get("AuthorizationType") == "AWS_IAM", f"{name}: AuthorizationType not AWS_IAM")
        if r["Type"] == "AWS::Lambda::Permission":
            sam_require(r["Properties"].get("Principal") == "apigateway.amazonaws.com",
                        f"{name}: Lambda permission for {r['Properties'].get('Principal')!r}")
    (_, api), = apis.items()
    body = api["Properties"].get("Body")
    sam_require(isinstance(body, dict), "the REST API has no inline OpenAPI body")
    schemes = body.get("components", {}).get("securitySchemes") or body.get("securityDefinitions") or {}
    sigv4 = {n for n, s in schemes.items() if s.get("x-amazon-apigateway-authtype") == "awsSigv4"}
    methods = {(path, m): op for path, ops in body.get("paths", {}).items() for m, op in ops.items()}
    sam_require(("/hello-world", "get") in methods, "GET /hello-world missing from the transformed API")
    for (path, method), op in methods.items():
        security = op.get("security") or body.get("security") or []
        names = {n for req in security for n in req}
        sam_require(bool(names) and names <= sigv4,
                    f"{method.upper()} {path}: authorization is {sorted(names)}, not AWS_IAM (awsSigv4)")
        integration = op.get("x-amazon-apigateway-integration", {})
        sam_require("credentials" not in integration,
                    f"{method.upper()} {path}: integration has credentials {integration.get('credentials')!r} "
                    "(InvokeRole must be NONE: callers would need lambda:InvokeFunction)")


def sam_expected_caller_principal(rendered: dict, params: dict) -> str:
    if params.get("CreatePodRole") == "true":
        return f"arn:aws:iam::{ACCOUNT}:role/{PSEUDO['AWS::StackName']}-PodRole-GENERATED"
    return params["TrustedPrincipalArn"]


def sam_check_caller_role(rendered: dict, params: dict) -> None:
    resources = rendered["Resources"]
    role = resources.get("CallerRole")
    sam_require(role is not None and role["Type"] == "AWS::IAM::Role", "CallerRole (AWS::IAM::Role) missing")
    props = role["Properties"]

    st = _single_statement(props["AssumeRolePolicyDocument"], "CallerRole trust")
    principal = st.get("Principal")
    sam_require(principal != "*" and "*" not in json.dumps(principal), f"CallerRole trusts a wildcard: {principal!r}")
    sam_require(isinstance(principal, dict) and set(principal) == {"AWS"},
                f"CallerRole trust principal must be {{'AWS': <one role ARN>}}, got {principal!r}")
    sam_require(isinstance(principal["AWS"], str), f"CallerRole trusts more than one principal: {principal['AWS']!r}")
    expected = sam_expected_caller_principal(rendered, params)
    sam_require(principal["AWS"] == expected, f"CallerRole trusts {principal['AWS']!r}, expected {expected!r}")
    sam_require(ROLE_ARN_RE.fullmatch(principal["AWS"]) is not None, f"CallerRole principal is not a role ARN: {expected!r}")

    actions = set(_as_list(st.get("Action")))
    pod_identity = params.get("TrustedPrincipalIsPodIdentity") == "true" and params.get("CreatePodRole") != "true"
    allowed = {"sts:AssumeRole", "sts:TagSession"} if pod_identity else {"sts:AssumeRole"}
    sam_require(actions == allowed, f"CallerRole trust actions {sorted(actions)}, expected {sorted(allowed)}")

    external_id = params.get("ExternalId", "")
    condition = st.get("Condition")
    if external_id:
        sam_require(condition == {"StringEquals": {"sts:ExternalId": external_id}},
                    f"CallerRole trust must require sts:ExternalId = the parameter with StringEquals, got {condition!r}")
    else:
        sam_require(not condition, f"CallerRole trust has a condition without ExternalId: {condition!r}")

    sam_require(1 <= props.get("MaxSessionDuration", 3600) <= 3600,
                "CallerRole MaxSessionDuration above 1 h (a chained session is capped at 1 h anyway)")
    sam_require(not props.get("ManagedPolicyArns"), "CallerRole has managed policies")
    sam_require(not props.get("Policies"), "CallerRole must get its one permission from CallerRoleInvokePolicy only")
    attached = _policies_attached_to(resources, "CallerRole", "callerrole0id")
    extra = [n for n, _ in attached if n != "CallerRoleInvokePolicy"]
    sam_require(not extra, f"CallerRole gets more permissions from {extra}")
    invoke = resources.get("CallerRoleInvokePolicy")
    sam_require(invoke is not None and invoke["Type"] == "AWS::IAM::RolePolicy"
                and invoke["Properties"].get("RoleName") == "callerrole0id",
                "CallerRoleInvokePolicy (AWS::IAM::RolePolicy on CallerRole) missing")
    pst = _single_statement(invoke["Properties"]["PolicyDocument"], "CallerRole policy")
    sam_require(_as_list(pst.get("Action")) == ["execute-api:Invoke"],
                f"CallerRole may only execute-api:Invoke, has {pst.get('Action')!r}")
    resource_arn = (f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/"
                    f"{params.get('StageName', 'Prod')}/GET/hello-world")
    got = _as_list(pst.get("Resource"))
    sam_require(got == [resource_arn], f"CallerRole may only invoke {resource_arn}, has {got!r}")
    sam_require(not re.search(r"[*?]", got[0]), f"wildcard in the execute-api resource {got[0]!r}")


def sam_check_pod_role(rendered: dict, params: dict) -> None:
    resources = rendered["Resources"]
    create = params.get("CreatePodRole") == "true"
    oidc_roles = [n for n, r in resources.items() if r["Type"] == "AWS::IAM::Role"
                  and "AssumeRoleWithWebIdentity" in json.dumps(r["Properties"].get("AssumeRolePolicyDocument"))]
    if not create:
        sam_require(not oidc_roles, f"CreatePodRole=false but {oidc_roles} trust an OIDC provider")
        sam_require("PodRolePolicy" not in resources, "CreatePodRole=false but PodRolePolicy exists")
        return
    sam_require(oidc_roles == ["PodRole"], f"expected the one OIDC-trusting role PodRole, got {oidc_roles}")
    props = resources["PodRole"]["Properties"]
    url, ns, sa = params["OidcProviderUrl"], params["ServiceAccountNamespace"], params["ServiceAccountName"]
    st = _single_statement(props["AssumeRolePolicyDocument"], "PodRole trust")
    provider = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{url}"
    sam_require(st.get("Principal") == {"Federated": provider},
                f"PodRole must trust exactly {provider}, trusts {st.get('Principal')!r}")
    sam_require(_as_list(st.get("Action")) == ["sts:AssumeRoleWithWebIdentity"],
                f"PodRole trust action {st.get('Action')!r}")
    expected = {"StringEquals": {f"{url}:sub": f"system:serviceaccount:{ns}:{sa}", f"{url}:aud": "sts.amazonaws.com"}}
    sam_require(st.get("Condition") == expected,
                f"PodRole trust condition must be exactly {expected}, got {st.get('Condition')!r}")
    sam_require(1 <= props.get("MaxSessionDuration", 3600) <= 3600, "PodRole MaxSessionDuration above 1 h")
    sam_require(not props.get("Policies") and not props.get("ManagedPolicyArns"),
                "PodRole must get its one permission from PodRolePolicy only")
    attached = _policies_attached_to(resources, "PodRole", "podrole0id")
    sam_require(len(attached) == 1, f"PodRole needs exactly one policy resource, has {[n for n, _ in attached]}")
    name, pol = attached[0]
    sam_require(pol["Type"] == "AWS::IAM::RolePolicy", f"{name}: expected an AWS::IAM::RolePolicy")
    pst = _single_statement(pol["Properties"]["PolicyDocument"], f"{name}")
    sam_require(_as_list(pst.get("Action")) == ["sts:AssumeRole"], f"PodRole may only sts:AssumeRole, has {pst.get('Action')!r}")
    caller = f"arn:aws:iam::{ACCOUNT}:role/{PSEUDO['AWS::StackName']}-CallerRole-GENERATED"
    sam_require(_as_list(pst.get("Resource")) == [caller],
                f"PodRole may only assume CallerRole, has {pst.get('Resource')!r}")


def sam_check_endpoint(transformed_rendered: dict, params: dict) -> None:
    """EndpointType=PRIVATE: a PRIVATE API behind the given VPC endpoints whose resource policy
    allows CallerRole only, only through those endpoints, and explicitly denies every other
    source. REGIONAL: a regional API with no resource policy statements."""
    apis = [r for r in transformed_rendered["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    sam_require(len(apis) == 1, "exactly one REST API expected")
    props = apis[0]["Properties"]
    endpoint = props.get("EndpointConfiguration", {})
    policy = props.get("Body", {}).get("x-amazon-apigateway-policy", {})
    statements = _as_list(policy.get("Statement", []))
    if params.get("EndpointType") != "PRIVATE":
        sam_require(endpoint == {"Types": ["REGIONAL"]}, f"REGIONAL API has endpoint configuration {endpoint!r}")
        sam_require(not statements, f"REGIONAL API has resource policy statements {statements!r}")
        return
    vpces = params["VpcEndpointIds"]
    sam_require(endpoint == {"Types": ["PRIVATE"], "VpcEndpointIds": vpces},
                f"private API endpoint configuration must be PRIVATE with {vpces}, got {endpoint!r}")
    sam_require(len(statements) == 2, f"private API resource policy needs exactly an Allow and a Deny, has {statements!r}")
    allow = [st for st in statements if st.get("Effect") == "Allow"]
    deny = [st for st in statements if st.get("Effect") == "Deny"]
    sam_require(len(allow) == 1 and len(deny) == 1, "private API resource policy needs one Allow and one explicit Deny")
    for st in statements:
        for key in ("NotPrincipal", "NotAction", "NotResource"):
            sam_require(key not in st, f"private API resource policy: {key} is not allowed")
        sam_require(_as_list(st.get("Action")) == ["execute-api:Invoke"],
                    f"private API resource policy must name execute-api:Invoke only, has {st.get('Action')!r}")
    a, d = allow[0], deny[0]
    caller = f"arn:aws:iam::{ACCOUNT}:role/{PSEUDO['AWS::StackName']}-CallerRole-GENERATED"
    sam_require(a.get("Principal") == {"AWS": caller},
                f"private API allows {a.get('Principal')!r}, expected only CallerRole {caller!r}")
    stage = params.get("StageName", "Prod")
    sam_require(_as_list(a.get("Resource")) == [f"execute-api:/{stage}/GET/hello-world"],
                f"private API Allow resource {a.get('Resource')!r}")
    sam_require(a.get("Condition") == {"StringEquals": {"aws:SourceVpce": vpces}},
                f"private API Allow must require aws:SourceVpce in {vpces} (StringEquals), has {a.get('Condition')!r}")
    sam_require(d.get("Principal") == "*" and _as_list(d.get("Resource")) == ["execute-api:/*"],
                f"private API Deny must cover every principal and resource, has {d!r}")
    sam_require(d.get("Condition") == {"StringNotEquals": {"aws:SourceVpce": vpces}},
                f"private API Deny must refuse every other aws:SourceVpce, has {d.get('Condition')!r}")


def sam_check_outputs(rendered: dict, params: dict) -> None:
    outputs = {k: v["Value"] for k, v in rendered["Outputs"].items()}
    stage_url = f"https://{API_ID}.execute-api.{REGION}.amazonaws.com/{params.get('StageName', 'Prod')}"
    caller = f"arn:aws:iam::{ACCOUNT}:role/{PSEUDO['AWS::StackName']}-CallerRole-GENERATED"
    create = params.get("CreatePodRole") == "true"
    sam_require(outputs.get("StageUrl") == stage_url, f"StageUrl output {outputs.get('StageUrl')!r} != {stage_url!r}")
    sam_require(outputs.get("CallerRoleArn") == caller, "CallerRoleArn output is not the CallerRole ARN")
    pod = sam_expected_caller_principal(rendered, params) if create else None
    sam_require(outputs.get("PodRoleArn") == pod, f"PodRoleArn output {outputs.get('PodRoleArn')!r}, expected {pod!r}")

    argv = shlex.split(outputs["HelmInstallCommand"])
    sam_require(argv[:4] == ["helm", "install", "sigv4-sidecar", "./helm/sigv4-sidecar"],
                f"helm command starts {argv[:4]}")
    sets = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--set")
    sam_require(sets.get("config.upstream") == stage_url, f"helm config.upstream {sets.get('config.upstream')!r}")
    sam_require(sets.get("config.roleArn") == caller, f"helm config.roleArn {sets.get('config.roleArn')!r}")
    sam_require(sets.get("config.externalId") == (params.get("ExternalId") or None), "helm config.externalId")
    annotation = sets.get(r"serviceAccount.annotations.eks\.amazonaws\.com/role-arn")
    if create:
        want = pod
    elif params.get("TrustedPrincipalIsPodIdentity") == "true":
        want = None  # Pod Identity: an association, no annotation
    else:
        want = params["TrustedPrincipalArn"]
    sam_require(annotation == want, f"helm IRSA annotation {annotation!r}, expected {want!r}")
    if create:
        sam_require(argv[argv.index("--namespace") + 1] == params["ServiceAccountNamespace"]
                    and sets.get("serviceAccount.name") == params["ServiceAccountName"],
                    "helm command must install into the trusted namespace/service account")


def sam_check_template(path: Path, scenarios: dict = SCENARIOS) -> None:
    """Every property, for every scenario, on the template as written and as transformed by SAM."""
    source = sam_load(path)
    sam_check_parameter_patterns(source)
    sam_check_api_source(source)
    sam_check_api_transformed(sam_transform(source))
    for scenario, overrides in scenarios.items():
        violations = sam_rules_violations(source, overrides)
        sam_require(not violations, f"{scenario}: template Rules reject a valid setup: {violations}")
        # The transform sees the parameter values, as in CloudFormation (SAM resolves some Refs).
        transformed = sam_transform(source, sam_param_values(source, overrides))
        for label, tpl in (("template", source), ("transformed", transformed)):
            rendered = sam_render(tpl, overrides)
            params = sam_params(tpl, overrides)
            try:
                sam_check_caller_role(rendered, params)
                sam_check_pod_role(rendered, params)
                sam_check_outputs(rendered, params)
                if label == "transformed":
                    sam_check_endpoint(rendered, params)
            except SamSecurityError as e:
                raise SamSecurityError(f"[{scenario}, {label}] {e}") from None
    # Rules keep out the setups that would trust nobody or two principals.
    for overrides, why in (
        ({}, "no principal at all"),
        ({"CreatePodRole": "true", "OidcProviderUrl": OIDC_URL, "TrustedPrincipalArn": POD_ROLE_ARN}, "two principals"),
        ({"CreatePodRole": "true"}, "pod role without an OIDC provider"),
        ({"CreatePodRole": "true", "OidcProviderUrl": OIDC_URL, "ServiceAccountName": ""}, "pod role without a SA"),
        ({"TrustedPrincipalArn": POD_ROLE_ARN, "EndpointType": "PRIVATE"}, "a private API without VPC endpoints"),
        ({"TrustedPrincipalArn": POD_ROLE_ARN, "EndpointType": "PRIVATE", "VpcEndpointIds": "vpce-0abc123de4f5a6b7c,"},
         "a private API with an empty VPC endpoint id"),
        ({"TrustedPrincipalArn": POD_ROLE_ARN, "VpcEndpointIds": "vpce-0abc123de4f5a6b7c"},
         "VPC endpoints on a regional API"),
    ):
        sam_require(bool(sam_rules_violations(source, overrides)), f"template Rules accept {why}: {overrides}")
