{{/*
==========================================================================================
Named templates of the sigv4-sidecar chart.

Public (stable, meant to be included by other charts that declare this chart as a dependency):
  sigv4-sidecar.container           the sidecar container: one list item ("- name: ...") for
                                    `initContainers:` (nativeSidecar) or `containers:`
  sigv4-sidecar.volumes             its pod volumes: list items for `volumes:`
  sigv4-sidecar.podAnnotations      scrape annotations + checksum/config: map entries
  sigv4-sidecar.configToml          the rendered TOML configuration
  sigv4-sidecar.serviceAccountName  the ServiceAccount the pod should run as
  sigv4-sidecar.fullname            the name prefix of this chart's resources

Every public template accepts as its context either
  1. this chart's own root context (`.` inside this chart),
  2. a parent chart's root context (`.` inside the parent) when the dependency is named
     "sigv4-sidecar": values are read from `.Values.sigv4-sidecar` (the merged subchart values),
  3. an explicit dict, for an aliased dependency or any other values:
       (dict "Values" .Values.mySigner "Release" .Release "Capabilities" .Capabilities)
==========================================================================================
*/}}

{{/*
Normalise the context: fills the dict passed as "out" with Values, Release, Capabilities and
AppVersion from the context passed as "in" (see the three forms above). Idempotent.
*/}}
{{- define "sigv4-sidecar.context" -}}
{{- $in := .in -}}
{{- $out := .out -}}
{{- $values := $in.Values -}}
{{- if hasKey $values "sigv4-sidecar" -}}
{{- $values = index $values "sigv4-sidecar" -}}
{{- end -}}
{{- $_ := set $out "Values" $values -}}
{{- $_ := set $out "Release" $in.Release -}}
{{- $_ := set $out "Capabilities" (index $in "Capabilities") -}}
{{- $appVersion := index $in "AppVersion" | default "" -}}
{{- $chart := index $in "Chart" -}}
{{- if and (not $appVersion) $chart -}}
{{- if eq $chart.Name "sigv4-sidecar" -}}
{{- $appVersion = $chart.AppVersion -}}
{{- else -}}
{{- $sub := index (index $in "Subcharts" | default dict) "sigv4-sidecar" -}}
{{- if $sub -}}
{{- $appVersion = $sub.Chart.AppVersion -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $out "AppVersion" $appVersion -}}
{{- end -}}

{{/* Chart name (nameOverride or "sigv4-sidecar"). */}}
{{- define "sigv4-sidecar.name" -}}
{{- $c := dict -}}
{{- include "sigv4-sidecar.context" (dict "in" . "out" $c) -}}
{{- default "sigv4-sidecar" $c.Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name: fullnameOverride, else "<release>-<name>" (or the release name when it already
contains the name). The chart name is a constant rather than .Chart.Name so that a parent
chart computes the same names as the subchart does.
*/}}
{{- define "sigv4-sidecar.fullname" -}}
{{- $c := dict -}}
{{- include "sigv4-sidecar.context" (dict "in" . "out" $c) -}}
{{- if $c.Values.fullnameOverride -}}
{{- $c.Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "sigv4-sidecar.name" $c -}}
{{- if contains $name $c.Release.Name -}}
{{- $c.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" $c.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of the ConfigMap holding config.toml. */}}
{{- define "sigv4-sidecar.configMapName" -}}
{{- printf "%s-config" (include "sigv4-sidecar.fullname" .) -}}
{{- end -}}

{{/* Labels of this chart's own resources (own root context only). */}}
{{- define "sigv4-sidecar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sigv4-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Pod selector labels of the chart's own Deployment. */}}
{{- define "sigv4-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sigv4-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* ServiceAccount name: the created one, or serviceAccount.name / "default". */}}
{{- define "sigv4-sidecar.serviceAccountName" -}}
{{- $c := dict -}}
{{- include "sigv4-sidecar.context" (dict "in" . "out" $c) -}}
{{- if $c.Values.serviceAccount.create -}}
{{- default (include "sigv4-sidecar.fullname" $c) $c.Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" $c.Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Port number of a listen address ("127.0.0.1:8080", "[::1]:8080"); "default" when unset.
Input: dict "listen" <string or nil> "default" <int> "what" <key for messages>.
*/}}
{{- define "sigv4-sidecar.listenPort" -}}
{{- $listen := .listen | default "" | toString -}}
{{- if eq $listen "" -}}
{{- .default -}}
{{- else -}}
{{- $port := regexFind "[0-9]+$" $listen -}}
{{- if or (not $port) (lt (atoi $port) 1) (gt (atoi $port) 65535) -}}
{{- fail (printf "%s: %q has no valid port (expected host:port, e.g. 127.0.0.1:8080)" .what $listen) -}}
{{- end -}}
{{- atoi $port -}}
{{- end -}}
{{- end -}}

{{/* Admin port (from config.adminListen, default 9090). Takes a normalised context. */}}
{{- define "sigv4-sidecar.adminPort" -}}
{{- include "sigv4-sidecar.listenPort" (dict "listen" .Values.config.adminListen "default" 9090 "what" "config.adminListen") -}}
{{- end -}}

{{/*
One TOML `key = value` line (preceded by a newline) for config key .key (camelCase) with
value .value; nothing at all for an unset value (nil, "" or an empty list), so the binary's
default applies. Strings, and lists of strings, are rendered as JSON, which is valid TOML.
*/}}
{{- define "sigv4-sidecar.tomlKeyValue" -}}
{{- $v := .value -}}
{{- if not (or (kindIs "invalid" $v) (and (kindIs "string" $v) (eq $v "")) (and (kindIs "slice" $v) (eq (len $v) 0))) }}
{{ snakecase .key }} = {{ if kindIs "string" $v }}{{ toJson $v }}{{ else if kindIs "slice" $v }}{{ range $v }}{{ if not (kindIs "string" .) }}{{ fail (printf "%s: %v is not a string" $.where .) }}{{ end }}{{ end }}{{ toJson $v }}{{ else if or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v) }}{{ int64 $v }}{{ else }}{{ fail (printf "%s: unsupported value %v (expected a string, a list of strings or an integer)" .where $v) }}{{ end }}
{{- end -}}
{{- end -}}

{{/* Config keys in file order, top level and per route. */}}
{{- define "sigv4-sidecar.topLevelKeys" -}}
upstream region service roleArn roleSessionName externalId roleDuration refreshBeforeExpiry maxBodyBytes caFile connectTimeout requestTimeout connect payload signingAlgorithm regionSet unsignedHeaders clientAuthorizationTo shutdownGrace listen adminListen logFormat logLevel maxConnections maxInflightBodyBytes maxHeaderBytes headerReadTimeout
{{- end -}}
{{- define "sigv4-sidecar.routeKeys" -}}
name listen upstream region service roleArn roleSessionName externalId roleDuration refreshBeforeExpiry maxBodyBytes caFile connectTimeout requestTimeout connect payload signingAlgorithm regionSet unsignedHeaders clientAuthorizationTo
{{- end -}}

{{/*
The TOML configuration file, from .Values.config (camelCase -> snake_case; routes -> [[routes]]).
*/}}
{{- define "sigv4-sidecar.configToml" -}}
{{- $c := dict -}}
{{- include "sigv4-sidecar.context" (dict "in" . "out" $c) -}}
{{- $cfg := $c.Values.config | default dict -}}
# sigv4-sidecar configuration, rendered by the sigv4-sidecar Helm chart from .Values.config.
# Keys left unset in the values are omitted so the binary's defaults apply.
{{- range $key := splitList " " (include "sigv4-sidecar.topLevelKeys" $c) }}
{{- include "sigv4-sidecar.tomlKeyValue" (dict "key" $key "value" (index $cfg $key) "where" (printf "config.%s" $key)) }}
{{- end }}
{{- range $i, $route := $cfg.routes | default list }}

[[routes]]
{{- range $key := splitList " " (include "sigv4-sidecar.routeKeys" $c) }}
{{- include "sigv4-sidecar.tomlKeyValue" (dict "key" $key "value" (index $route $key) "where" (printf "config.routes[%d].%s" $i $key)) }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The sidecar container, as one YAML list item. Include it under `initContainers:` when
nativeSidecar is true (it then carries restartPolicy: Always), else under `containers:`.
*/}}
{{- define "sigv4-sidecar.container" -}}
{{- $c := dict -}}
{{- include "sigv4-sidecar.context" (dict "in" . "out" $c) -}}
{{- $v := $c.Values -}}
{{- if and $v.nativeSidecar $c.Capabilities -}}
{{- if semverCompare "<1.29.0-0" $c.Capabilities.KubeVersion.Version -}}
{{- fail (printf "nativeSidecar=true needs Kubernetes 1.29+ (native sidecar containers); this cluster is %s: set nativeSidecar=false" $c.Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- end -}}
{{- $tag := toString ($v.image.tag | default $c.AppVersion) -}}
{{- if not $tag -}}
{{- fail "image.tag is empty and the chart appVersion is unknown in this context: set image.tag" -}}
{{- end -}}
{{- $proxyPort := include "sigv4-sidecar.listenPort" (dict "listen" $v.config.listen "default" 8080 "what" "config.listen") -}}
{{- $adminPort := include "sigv4-sidecar.adminPort" $c -}}
{{- $seen := dict $proxyPort "config.listen" -}}
{{- if hasKey $seen $adminPort -}}
{{- fail (printf "config.adminListen: port %s is already used by config.listen" $adminPort) -}}
{{- end -}}
{{- $_ := set $seen $adminPort "config.adminListen" -}}
- name: sigv4-sidecar
  image: {{ printf "%s:%s" $v.image.repository $tag | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $v.nativeSidecar }}
  restartPolicy: Always
  {{- end }}
  args:
    - --config
    - /etc/sigv4-sidecar/config.toml
  {{- with $v.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: proxy
      containerPort: {{ $proxyPort }}
      protocol: TCP
    - name: admin
      containerPort: {{ $adminPort }}
      protocol: TCP
    {{- range $i, $route := $v.config.routes | default list }}
    {{- $what := printf "config.routes[%d].listen" $i }}
    {{- $port := include "sigv4-sidecar.listenPort" (dict "listen" (required (printf "%s is required" $what) $route.listen) "default" 0 "what" $what) }}
    {{- if hasKey $seen $port }}
    {{- fail (printf "%s: port %s is already used by %s" $what $port (get $seen $port)) }}
    {{- end }}
    {{- $_ := set $seen $port $what }}
    - name: {{ printf "route-%d" $i }}
      containerPort: {{ $port }}
      protocol: TCP
    {{- end }}
  startupProbe:
    httpGet:
      path: /readyz
      port: admin
    {{- toYaml $v.probes.startup | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: admin
    {{- toYaml $v.probes.readiness | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: admin
    {{- toYaml $v.probes.liveness | nindent 4 }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: sigv4-sidecar-config
      mountPath: /etc/sigv4-sidecar
      readOnly: true
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* The sidecar's pod volumes, as YAML list items for `volumes:`. */}}
{{- define "sigv4-sidecar.volumes" -}}
{{- $c := dict -}}
{{- include "sigv4-sidecar.context" (dict "in" . "out" $c) -}}
- name: sigv4-sidecar-config
  configMap:
    name: {{ include "sigv4-sidecar.configMapName" $c }}
{{- with $c.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Pod annotations, as YAML map entries: checksum/config (so pods roll when the configuration
changes) and, unless metrics.scrapeAnnotations is false, prometheus.io/scrape|port|path.
*/}}
{{- define "sigv4-sidecar.podAnnotations" -}}
{{- $c := dict -}}
{{- include "sigv4-sidecar.context" (dict "in" . "out" $c) -}}
checksum/config: {{ include "sigv4-sidecar.configToml" $c | sha256sum }}
{{- if $c.Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ include "sigv4-sidecar.adminPort" $c | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}
