"""Checks of sam/template.yaml: the linters, the real SAM transform, and the security properties.

Run: .venv/bin/pytest checks/test_sam.py

The security checker (checks/sam_checker.py) reads the template (short tags such as !Ref/!Sub/!If parsed as data),
resolves it for a few parameter sets (IRSA role elsewhere, with ExternalId, EKS Pod Identity,
pod IRSA role created by the stack, private API behind VPC endpoints), runs the SAM translator in-process (offline, no managed
policy lookups) and fails on any lost property. Every property is shown to be able to fail:
test_checker_rejects mutates a copy of the template and expects the checker to reject it.

Nothing here talks to the network: sam runs with dummy credentials, an unreachable endpoint and
proxy, telemetry off and the version check pre-dated (see sam_cli_env).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sam_checker import (  # noqa: E402
    POD_ROLE_ARN,
    REGION,
    REPO,
    SamSecurityError,
    TEMPLATE,
    sam_check_api_transformed,
    sam_check_template,
    sam_dump,
    sam_load,
    sam_transform,
)


# --------------------------------------------------------------------------------------------
# Tests: the real template.


def test_template_security_properties():
    sam_check_template(TEMPLATE)


def test_function_build_settings():
    fn = sam_load(TEMPLATE)["Resources"]["HelloFunction"]
    props = fn["Properties"]
    assert fn["Type"] == "AWS::Serverless::Function"
    assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda"
    assert fn["Metadata"]["BuildProperties"]["Binary"] == "hello-lambda"
    assert (props["Runtime"], props["Handler"], props["Architectures"]) == ("provided.al2023", "bootstrap", ["arm64"])
    code = (TEMPLATE.parent / props["CodeUri"]).resolve()
    manifest = (code / "Cargo.toml").read_text()
    assert re.search(r'(?m)^name = "hello-lambda"$', manifest), f"{code}/Cargo.toml is not the hello-lambda crate"


def test_samconfig_deploy_defaults():
    import tomllib

    cfg = tomllib.loads((TEMPLATE.parent / "samconfig.toml").read_text())
    deploy = cfg["default"]["deploy"]["parameters"]
    assert deploy["confirm_changeset"] is True
    assert deploy["resolve_s3"] is True
    # No fixed IAM names in the template, so CAPABILITY_IAM is enough.
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    roles = [r for r in sam_load(TEMPLATE)["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert roles and not [r for r in roles if "RoleName" in r["Properties"]]


# --------------------------------------------------------------------------------------------
# Tests: each property can fail. A mutated copy of the template must be rejected.


def _stmt(tpl, role):
    return tpl["Resources"][role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]


def _invoke(tpl):
    return tpl["Resources"]["CallerRoleInvokePolicy"]["Properties"]["PolicyDocument"]["Statement"]


def _private(tpl):
    """The private API's resource policy statements [Allow, Deny] (the PRIVATE branch)."""
    return tpl["Resources"]["Api"]["Properties"]["Auth"]["ResourcePolicy"]["CustomStatements"]["Fn::If"][1]


def _pod_trust_replace(old, new):
    """Regex substitution in the PodRole trust (a JSON string under !Sub)."""
    def mutate(tpl):
        doc = tpl["Resources"]["PodRole"]["Properties"]["AssumeRolePolicyDocument"]
        doc["Fn::Sub"], n = re.subn(old, new, doc["Fn::Sub"])
        assert n == 1, f"mutation pattern {old!r} matched {n} times in the PodRole trust"
    return mutate


def _set(path, value):
    def mutate(tpl):
        node = tpl
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(tpl):
        node = tpl
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


def _both(*mutations):
    def mutate(tpl):
        for m in mutations:
            m(tpl)
    return mutate


EVENT = ["Resources", "HelloFunction", "Properties", "Events", "HelloWorld", "Properties"]
API_AUTH = ["Resources", "Api", "Properties", "Auth"]
CALLER = ["Resources", "CallerRole", "Properties"]
TRUST = CALLER + ["AssumeRolePolicyDocument", "Statement", 0]

MUTATIONS = {
    # CallerRole trust
    "principal-star": (lambda t: _stmt(t, "CallerRole").update(Principal={"AWS": "*"}), "wildcard"),
    "principal-bare-star": (lambda t: _stmt(t, "CallerRole").update(Principal="*"), "wildcard"),
    "principal-two": (lambda t: _stmt(t, "CallerRole")["Principal"].update(
        AWS=[{"Ref": "TrustedPrincipalArn"}, "arn:aws:iam::222222222222:role/other"]), "more than one principal"),
    "principal-account-root": (lambda t: _stmt(t, "CallerRole")["Principal"].update(
        AWS={"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}), "CallerRole trusts"),
    "principal-service": (lambda t: _stmt(t, "CallerRole")["Principal"].update(Service="ec2.amazonaws.com"), "principal must be"),
    "trust-second-statement": (lambda t: t["Resources"]["CallerRole"]["Properties"]["AssumeRolePolicyDocument"][
        "Statement"].append({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::222222222222:role/x"},
                             "Action": "sts:AssumeRole"}), "exactly one statement"),
    "principal-pattern-relaxed": (_set(["Parameters", "TrustedPrincipalArn", "AllowedPattern"], ".*"), "pattern accepts"),
    "principal-pattern-dropped": (_delete(["Parameters", "TrustedPrincipalArn", "AllowedPattern"]), "AllowedPattern"),
    "external-id-dropped": (_delete(TRUST + ["Condition"]), "ExternalId"),
    "external-id-stringlike": (_set(TRUST + ["Condition"], {"Fn::If": ["HasExternalId", {
        "StringLike": {"sts:ExternalId": {"Ref": "ExternalId"}}}, {"Ref": "AWS::NoValue"}]}), "ExternalId"),
    "external-id-always-empty": (_set(TRUST + ["Condition"], {"StringEquals": {"sts:ExternalId": ""}}), "condition"),
    "tagsession-always": (_set(TRUST + ["Action"], ["sts:AssumeRole", "sts:TagSession"]), "trust actions"),
    "tagsession-never": (_set(TRUST + ["Action"], "sts:AssumeRole"), "trust actions"),
    "assume-star": (_set(TRUST + ["Action"], "sts:*"), "trust actions"),
    # CallerRole permissions
    "invoke-action-star": (lambda t: _invoke(t)[0].update(Action="execute-api:*"), "only execute-api:Invoke"),
    "invoke-stage-star": (lambda t: _invoke(t)[0].update(Resource={"Fn::Sub": (
        "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${Api}/*/GET/hello-world")}), "may only invoke"),
    "invoke-method-star": (lambda t: _invoke(t)[0].update(Resource={"Fn::Sub": (
        "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${Api}/${StageName}/*/*")}), "may only invoke"),
    "invoke-two-resources": (lambda t: _invoke(t)[0].update(Resource=[_invoke(t)[0]["Resource"], "*"]), "may only invoke"),
    "invoke-second-statement": (lambda t: _invoke(t).append(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}), "exactly one statement"),
    "caller-managed-policy": (_set(CALLER + ["ManagedPolicyArns"], ["arn:aws:iam::aws:policy/AdministratorAccess"]),
                              "managed policies"),
    "caller-extra-policy-resource": (lambda t: t["Resources"].update(Extra={"Type": "AWS::IAM::Policy", "Properties": {
        "PolicyName": "x", "Roles": [{"Ref": "CallerRole"}], "PolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]}}}), "more permissions"),
    "caller-inline-policy": (_set(CALLER + ["Policies"], [{"PolicyName": "x", "PolicyDocument": {
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}}]),
        "CallerRoleInvokePolicy only"),
    "caller-long-sessions": (_set(CALLER + ["MaxSessionDuration"], 43200), "MaxSessionDuration"),
    "stage-pattern-relaxed": (_set(["Parameters", "StageName", "AllowedPattern"], "^.+$"), "StageName pattern accepts"),
    # PodRole
    "pod-sub-stringlike": (_pod_trust_replace('"StringEquals"', '"StringLike"'), "PodRole trust condition"),
    "pod-sub-wildcard": (_pod_trust_replace(r":\$\{ServiceAccountName\}", ":*"), "PodRole trust condition"),
    "pod-sub-any-sa-in-ns": (_pod_trust_replace(r":\$\{ServiceAccountName\}",
                                                ":default"), "PodRole trust condition"),
    "pod-aud-dropped": (_pod_trust_replace(r',\s*"\$\{OidcProviderUrl\}:aud": "sts\.amazonaws\.com"', ""),
                        "PodRole trust condition"),
    "pod-other-provider": (_pod_trust_replace(r"oidc-provider/\$\{OidcProviderUrl\}", "oidc-provider/*"), "PodRole must trust"),
    "pod-policy-star": (lambda t: t["Resources"]["PodRolePolicy"]["Properties"]["PolicyDocument"]["Statement"][0].update(
        Resource="*"), "may only assume CallerRole"),
    "pod-policy-action": (lambda t: t["Resources"]["PodRolePolicy"]["Properties"]["PolicyDocument"]["Statement"][0].update(
        Action="sts:*"), "may only sts:AssumeRole"),
    "pod-role-inline-policy": (_set(["Resources", "PodRole", "Properties", "Policies"], [{"PolicyName": "x",
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}}]),
        "PodRolePolicy only"),
    "pod-role-always": (_delete(["Resources", "PodRole", "Condition"]), "OIDC"),
    "caller-trusts-param-not-pod-role": (_set(TRUST + ["Principal", "AWS"], {"Ref": "TrustedPrincipalArn"}),
                                         "CallerRole trusts"),
    "rule-principal-dropped": (_delete(["Rules", "CallerRoleNeedsAPrincipal"]), "Rules accept no principal"),
    "rule-two-principals-dropped": (lambda t: t["Rules"]["PodRoleNeedsItsInputs"]["Assertions"].pop(3),
                                    "Rules accept two principals"),
    # API
    "api-invoke-role-default": (_both(_delete(API_AUTH + ["InvokeRole"]), _delete(EVENT + ["Auth", "InvokeRole"])),
                                "InvokeRole"),
    "api-event-caller-credentials": (_set(EVENT + ["Auth", "InvokeRole"], "CALLER_CREDENTIALS"), "InvokeRole"),
    "api-no-auth": (_both(_delete(API_AUTH + ["DefaultAuthorizer"]), _delete(EVENT + ["Auth"])), "not AWS_IAM"),
    "api-event-authorizer-none": (_set(EVENT + ["Auth", "Authorizer"], "NONE"), "not AWS_IAM"),
    "api-implicit": (_delete(EVENT + ["RestApiId"]), "RestApiId"),
    "function-url": (_set(["Resources", "HelloFunction", "Properties", "FunctionUrlConfig"], {"AuthType": "NONE"}),
                     "AWS::Lambda::Url"),
    # Private API (EndpointType=PRIVATE)
    "private-sourcevpce-dropped": (lambda t: _private(t)[0].pop("Condition"), "aws:SourceVpce"),
    "private-sourcevpce-stringlike": (lambda t: _private(t)[0].update(
        Condition={"StringLike": {"aws:SourceVpce": "vpce-*"}}), "aws:SourceVpce"),
    "private-principal-star": (lambda t: _private(t)[0].update(Principal="*"), "expected only CallerRole"),
    "private-principal-account": (lambda t: _private(t)[0].update(Principal={"AWS": {"Ref": "AWS::AccountId"}}),
                                  "expected only CallerRole"),
    "private-principal-pod-role": (lambda t: _private(t)[0].update(Principal={"AWS": {"Ref": "TrustedPrincipalArn"}}),
                                   "expected only CallerRole"),
    "private-action-star": (lambda t: _private(t)[0].update(Action="execute-api:*"), "execute-api:Invoke only"),
    "private-action-manage": (lambda t: _private(t)[1].update(Action="execute-api:ManageConnections"),
                              "execute-api:Invoke only"),
    "private-resource-star": (lambda t: _private(t)[0].update(Resource="execute-api:/*"), "Allow resource"),
    "private-deny-dropped": (lambda t: _private(t).pop(1), "an Allow and a Deny"),
    "private-deny-as-allow": (lambda t: _private(t)[1].update(Effect="Allow"), "one explicit Deny"),
    "private-deny-condition-dropped": (lambda t: _private(t)[1].pop("Condition"), "every other aws:SourceVpce"),
    "private-endpoint-regional": (_set(["Resources", "Api", "Properties", "EndpointConfiguration", "Type"], "REGIONAL"),
                                  "PRIVATE with"),
    "private-vpce-ids-dropped": (_delete(["Resources", "Api", "Properties", "EndpointConfiguration", "VPCEndpointIds"]),
                                 "PRIVATE with"),
    "private-policy-always": (_set(["Resources", "Api", "Properties", "Auth", "ResourcePolicy", "CustomStatements"],
                                   [{"Effect": "Deny", "Principal": "*", "Action": "execute-api:Invoke",
                                     "Resource": "execute-api:/*"}]), "resource policy"),
    "private-vpce-pattern-relaxed": (_set(["Parameters", "VpcEndpointIds", "AllowedPattern"], ".*"),
                                     "VpcEndpointIds pattern accepts"),
    "private-rule-dropped": (_delete(["Rules", "PrivateApiNeedsVpcEndpoints"]), "a private API without VPC endpoints"),
    # Outputs
    "helm-wrong-role": (lambda t: t["Outputs"]["HelmInstallCommand"]["Value"]["Fn::Join"][1].__setitem__(
        3, " --set config.roleArn=" + POD_ROLE_ARN), "config.roleArn"),
    "output-stage-url": (_set(["Outputs", "StageUrl", "Value"], {"Fn::Sub": "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/"}),
                         "StageUrl"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_checker_rejects(name, tmp_path):
    mutate, message = MUTATIONS[name]
    tpl = sam_load(TEMPLATE)
    mutate(tpl)
    mutated = sam_dump(tpl, tmp_path / "template.yaml")
    with pytest.raises(SamSecurityError, match=re.escape(message)):
        sam_check_template(mutated)


def test_transformed_check_catches_credentials_by_itself():
    """The transformed-template check alone (not the source check) sees InvokeRole loss."""
    tpl = sam_load(TEMPLATE)
    del tpl["Resources"]["Api"]["Properties"]["Auth"]["InvokeRole"]
    del tpl["Resources"]["HelloFunction"]["Properties"]["Events"]["HelloWorld"]["Properties"]["Auth"]["InvokeRole"]
    transformed = sam_transform(tpl)
    with pytest.raises(SamSecurityError, match="credentials"):
        sam_check_api_transformed(transformed)
    sam_check_api_transformed(sam_transform(sam_load(TEMPLATE)))


def test_dump_roundtrip_keeps_template(tmp_path):
    """The mutation tests go through sam_dump/sam_load: the unmutated round trip must pass."""
    sam_check_template(sam_dump(sam_load(TEMPLATE), tmp_path / "template.yaml"))


# --------------------------------------------------------------------------------------------
# Tests: the tools (cfn-lint, sam validate), offline.


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install checks/requirements.txt into .venv")
    return found


def sam_cli_env(tmp_path: Path) -> dict:
    """sam without AWS: dummy credentials, every endpoint and proxy unreachable, no telemetry,
    no PyPI version check (the check is pre-dated in a private SAM CLI app dir)."""
    app_dir = tmp_path / "sam-app-dir"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "metadata.json").write_text(json.dumps({"lastVersionCheck": time.time(), "telemetryEnabled": False}))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "dummy-not-a-secret",
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_MAX_ATTEMPTS": "1",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
        "SAM_CLI_TELEMETRY": "0",
        "__SAM_CLI_APP_DIR": str(app_dir),
    }


def _run(argv, tmp_path, cwd=REPO):
    return subprocess.run(argv, cwd=cwd, env=sam_cli_env(tmp_path), capture_output=True, text=True, timeout=180)


def test_cfn_lint_reports_nothing(tmp_path):
    r = _run([_tool("cfn-lint"), str(TEMPLATE)], tmp_path)
    assert (r.returncode, r.stdout.strip(), r.stderr.strip()) == (0, "", ""), r.stdout + r.stderr


def test_cfn_lint_can_fail(tmp_path):
    tpl = sam_load(TEMPLATE)
    _invoke(tpl)[0]["Resource"] = {"Fn::GetAtt": ["NoSuchResource", "Arn"]}
    r = _run([_tool("cfn-lint"), str(sam_dump(tpl, tmp_path / "template.yaml"))], tmp_path)
    assert r.returncode != 0 and "NoSuchResource" in r.stdout, r.stdout + r.stderr


def _assert_offline(r):
    out = r.stdout + r.stderr
    assert "Loading policies from IAM" not in out, "sam validate tried to list IAM managed policies: " + out
    assert "update available" not in out.lower(), out


def test_sam_validate_lint(tmp_path):
    r = _run([_tool("sam"), "validate", "--lint", "-t", str(TEMPLATE)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is a valid SAM Template" in r.stdout + r.stderr
    _assert_offline(r)


def test_sam_validate_transform(tmp_path):
    r = _run([_tool("sam"), "validate", "--region", REGION, "-t", str(TEMPLATE)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # "basic SAM Validation" = the SAM translator ran (a `lint = true` default in
    # sam/samconfig.toml would make this run cfn-lint instead and skip the transform).
    assert "is a valid SAM Template. This is according to basic SAM Validation" in r.stdout + r.stderr
    _assert_offline(r)


def test_sam_validate_can_fail(tmp_path):
    tpl = sam_load(TEMPLATE)
    tpl["Resources"]["HelloFunction"]["Properties"]["Events"]["HelloWorld"]["Properties"]["Auth"]["Authorizer"] = (
        "NoSuchAuthorizer")
    r = _run([_tool("sam"), "validate", "--region", REGION, "-t", str(sam_dump(tpl, tmp_path / "template.yaml"))],
             tmp_path)
    assert r.returncode != 0 and "NoSuchAuthorizer" in r.stdout + r.stderr, r.stdout + r.stderr
    _assert_offline(r)
