{{/*
Object and Service names. Unprefixed by default (rng, hasher, redis, worker,
webui), so that the worker's defaults and the workshop's commands work
whatever the release is called; prefixNames: true gives <release>-<component>.
A Service name must be a DNS-1035 label (a letter first, at most 63
characters, no dot), and Helm accepts release names such as 1abc or a.b: dots
become dashes, a name that does not start with a letter gets dc- in front, and
the release part is cut so that the component's name always fits whole.
Call with (dict "root" $ "component" "rng").
*/}}
{{- define "dockercoins.name" -}}
{{- if .root.Values.prefixNames -}}
{{- $release := .root.Release.Name | replace "." "-" -}}
{{- if not (regexMatch "^[a-z]" $release) -}}
{{- $release = printf "dc-%s" $release -}}
{{- end -}}
{{- $room := sub 62 (len .component) | int -}}
{{- printf "%s-%s" ($release | trunc $room | trimSuffix "-") .component -}}
{{- else -}}
{{- .component -}}
{{- end -}}
{{- end -}}

{{/* The labels that select a component's pods (immutable in a Deployment). */}}
{{- define "dockercoins.selectorLabels" -}}
app: {{ .component }}
{{- if .root.Values.prefixNames }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}
{{- end -}}

{{/* Every object's labels. */}}
{{- define "dockercoins.labels" -}}
app: {{ .component }}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/part-of: dockercoins
app.kubernetes.io/version: {{ include "dockercoins.labelValue" .root.Chart.AppVersion | quote }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/*
A string made a valid label value: at most 63 characters of [A-Za-z0-9_.-],
beginning and ending with a letter or digit (an image tag may be 128
characters long, begin with _ and end with - or .; the API server refuses
such a label). Empty if nothing is left.
*/}}
{{- define "dockercoins.labelValue" -}}
{{- $value := regexReplaceAll "[^A-Za-z0-9_.-]" (toString .) "-" | trunc 63 -}}
{{- regexReplaceAll "[^A-Za-z0-9]+$" (regexReplaceAll "^[^A-Za-z0-9]+" $value "") "" -}}
{{- end -}}

{{/* An object's metadata: name, namespace, labels. */}}
{{- define "dockercoins.metadata" -}}
name: {{ include "dockercoins.name" . }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "dockercoins.labels" . | nindent 2 }}
{{- end -}}

{{/* What selects every pod of this release (the NetworkPolicy's "inside the app"). */}}
{{- define "dockercoins.appSelector" -}}
app.kubernetes.io/part-of: dockercoins
{{- if .Values.prefixNames }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- end -}}

{{/*
A value as a string, whole numbers as whole numbers: Helm reads every number
of a values file as a float, which Go prints as 1e+06 (a service refuses that
for 1000000).
*/}}
{{- define "dockercoins.string" -}}
{{- if kindIs "invalid" . -}}
{{- else if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- printf "%.0f" . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/*
A duration value (delays, shutdown) as the services read it. A bare number
other than 0 has no unit: refused with the key's name, not passed on for the
service to refuse at start. Call with (list "delays.rng" $value).
*/}}
{{- define "dockercoins.duration" -}}
{{- $key := index . 0 -}}
{{- $value := index . 1 -}}
{{- if and (not (kindIs "string" $value)) (ne (include "dockercoins.string" $value) "0") -}}
{{- fail (printf "%s: %v has no unit: write a duration such as 100ms, 2s or 0" $key $value) -}}
{{- end -}}
{{- include "dockercoins.string" $value -}}
{{- end -}}

{{/* A duration string (100ms, 1m30s, 0) in milliseconds, for the grace period's check. */}}
{{- define "dockercoins.milliseconds" -}}
{{- $total := 0.0 -}}
{{- $unit := dict "ns" 0.000001 "us" 0.001 "ms" 1.0 "s" 1000.0 "m" 60000.0 "h" 3600000.0 -}}
{{- range regexFindAll "[0-9]+(ns|us|ms|s|m|h)" (toString .) -1 -}}
{{- $n := regexFind "^[0-9]+" . | float64 -}}
{{- $total = addf $total (mulf $n (get $unit (trimPrefix (regexFind "^[0-9]+" .) .))) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* One of our images: <registry>/<component>:<tag>, or the component's own repository and tag. */}}
{{- define "dockercoins.image" -}}
{{- $v := .root.Values -}}
{{- $own := (index $v .component).image | default (dict) -}}
{{- $repository := $own.repository | default (printf "%s/%s" ($v.image.registry | trimSuffix "/") .component) -}}
{{- printf "%s:%s" $repository ($own.tag | default $v.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{/*
The environment of one of our services, one entry per name: what the chart
sets, then the global extraEnv, the component's env (NAME: value) and
extraEnv, each replacing an entry of the same name where it stands (a second
entry with the same name is refused by server-side apply, Helm 4's way).
*/}}
{{- define "dockercoins.env" -}}
{{- $v := .root.Values -}}
{{- $c := index $v .component -}}
{{- $turbo := $v.delays.turbo -}}
{{- $set := list -}}
{{- if eq .component "rng" }}
{{- $set = append $set (dict "name" "RNG_DELAY" "value" (ternary "0" (include "dockercoins.duration" (list "delays.rng" $v.delays.rng)) $turbo)) }}
{{- $set = append $set (dict "name" "RNG_CONCURRENCY" "value" (ternary "0" (include "dockercoins.string" $c.concurrency) $turbo)) }}
{{- else if eq .component "hasher" }}
{{- $set = append $set (dict "name" "HASHER_DELAY" "value" (ternary "0" (include "dockercoins.duration" (list "delays.hasher" $v.delays.hasher)) $turbo)) }}
{{- else if eq .component "worker" }}
{{- $set = append $set (dict "name" "RNG_URL" "value" (printf "http://%s" (include "dockercoins.name" (dict "root" .root "component" "rng")))) }}
{{- $set = append $set (dict "name" "HASHER_URL" "value" (printf "http://%s" (include "dockercoins.name" (dict "root" .root "component" "hasher")))) }}
{{- $set = concat $set (include "dockercoins.redisEnv" .root | fromYamlArray) }}
{{- $set = append $set (dict "name" "WORKER_SLEEP" "value" (ternary "0" (include "dockercoins.duration" (list "delays.worker" $v.delays.worker)) $turbo)) }}
{{- $set = append $set (dict "name" "WORKER_CONCURRENCY" "value" (ternary "32" (include "dockercoins.string" $c.concurrency) $turbo)) }}
{{- if $c.ignoreSigterm }}
{{- $set = append $set (dict "name" "WORKER_IGNORE_SIGTERM" "value" "true") }}
{{- end }}
{{- /* With Sentinel, a stop waits for a failover to take the last batch: most of the grace period. */ -}}
{{- if $v.redis.sentinel.addresses }}
{{- $set = append $set (dict "name" "WORKER_STOP_TIMEOUT" "value" (printf "%ds" (max 1 (sub (int64 $v.shutdown.gracePeriodSeconds) 5)))) }}
{{- end }}
{{- else if eq .component "webui" }}
{{- $set = concat $set (include "dockercoins.redisEnv" .root | fromYamlArray) }}
{{- end }}
{{- if ne $v.logFormat "text" }}
{{- $set = append $set (dict "name" "LOG_FORMAT" "value" $v.logFormat) }}
{{- end }}
{{- if and $turbo (ne .component "worker") }}
{{- $set = append $set (dict "name" "RUST_LOG" "value" "info,access=warn") }}
{{- end }}
{{- $set = append $set (dict "name" "SHUTDOWN_DRAIN" "value" (include "dockercoins.duration" (list "shutdown.drain" $v.shutdown.drain))) }}
{{- $set = append $set (dict "name" "SHUTDOWN_TIMEOUT" "value" (include "dockercoins.duration" (list "shutdown.timeout" $v.shutdown.timeout))) }}
{{- $set = concat $set ($v.extraEnv | default list) }}
{{- range $name := keys ($c.env | default dict) | sortAlpha }}
{{- $set = append $set (dict "name" $name "value" (include "dockercoins.string" (index $c.env $name))) }}
{{- end }}
{{- $set = concat $set ($c.extraEnv | default list) }}
{{- $byName := dict -}}
{{- $order := list -}}
{{- range $set }}
{{- if eq .name "PORT" }}
{{- fail "PORT cannot be set: every DockerCoins container listens on 80, the port of its probes and Services" }}
{{- end }}
{{- if not (hasKey $byName .name) }}
{{- $order = append $order .name }}
{{- end }}
{{- $entry := dict "name" .name }}
{{- if and (hasKey . "valueFrom") (hasKey . "value") }}
{{- fail (printf "extraEnv %s: both value and valueFrom are set; keep one" .name) }}
{{- end }}
{{- if hasKey . "valueFrom" }}
{{- $_ := set $entry "valueFrom" .valueFrom }}
{{- else }}
{{- $_ := set $entry "value" (include "dockercoins.string" (get . "value")) }}
{{- end }}
{{- $_ := set $byName .name $entry }}
{{- end }}
{{- $env := list -}}
{{- range $order }}
{{- $env = append $env (get $byName .) }}
{{- end }}
{{- toYaml $env }}
{{- end -}}

{{/* A map of labels or annotations, every value a string (a label's 2 is "2"). */}}
{{- define "dockercoins.stringMap" -}}
{{- $out := dict -}}
{{- range $key, $value := . }}
{{- $_ := set $out $key (include "dockercoins.string" $value) }}
{{- end }}
{{- toYaml $out -}}
{{- end -}}

{{/*
The pod template of rng, hasher, worker and webui. Its labels carry the
component's image tag as its version and not the chart's version, so that a
chart upgrade restarts only the pods whose settings changed. The images' user
(65532:65532, the images are FROM scratch), a read-only root, no capability,
no privilege escalation, the runtime's seccomp profile; readiness on /readyz,
liveness on /healthz (neither waits in rng's line); Prometheus annotations.
Every container listens on 80, as the images and the classic app do; the pod's
sysctl net.ipv4.ip_unprivileged_port_start=0 (a safe sysctl, allowed by Pod
Security "restricted") lets user 65532 bind it on every container runtime.
*/}}
{{- define "dockercoins.podTemplate" -}}
{{- $v := .root.Values -}}
{{- $c := index $v .component -}}
{{- $drain := include "dockercoins.milliseconds" (include "dockercoins.duration" (list "shutdown.drain" $v.shutdown.drain)) | float64 -}}
{{- $timeout := include "dockercoins.milliseconds" (include "dockercoins.duration" (list "shutdown.timeout" $v.shutdown.timeout)) | float64 -}}
{{- $grace := int64 $v.shutdown.gracePeriodSeconds -}}
{{- if le (mulf $grace 1000.0) (addf $drain $timeout) -}}
{{- fail (printf "shutdown.gracePeriodSeconds (%d) must be larger than shutdown.drain + shutdown.timeout (%s + %s): the kubelet would kill the pods while they drain" $grace (include "dockercoins.string" $v.shutdown.drain) (include "dockercoins.string" $v.shutdown.timeout)) -}}
{{- end -}}
{{- $labels := fromYaml (include "dockercoins.stringMap" ($c.podLabels | default $v.podLabels | default (dict))) -}}
{{- $chartLabels := omit (fromYaml (include "dockercoins.labels" .)) "helm.sh/chart" -}}
{{- $_ := set $chartLabels "app.kubernetes.io/version" (include "dockercoins.labelValue" (regexReplaceAll "^.*:" (include "dockercoins.image" .) "")) -}}
{{- $labels = mergeOverwrite $chartLabels $labels (fromYaml (include "dockercoins.selectorLabels" .)) -}}
{{- $annotations := dict "prometheus.io/scrape" "true" "prometheus.io/port" "80" "prometheus.io/path" "/metrics" -}}
{{- $annotations = mergeOverwrite $annotations (fromYaml (include "dockercoins.stringMap" ($c.podAnnotations | default $v.podAnnotations | default (dict)))) -}}
metadata:
  labels:
    {{- toYaml $labels | nindent 4 }}
  annotations:
    {{- toYaml $annotations | nindent 4 }}
spec:
  automountServiceAccountToken: false
  # No RNG_PORT=tcp://... and such from the Services: only the env below.
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ $grace }}
  {{- with (include "dockercoins.securityContext" (list $v "podSecurityContext") | fromYaml) }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ if kindIs "string" . }}{{ . }}{{ else }}{{ .name }}{{ end }}
    {{- end }}
  {{- end }}
  {{- with ($c.nodeSelector | default $v.nodeSelector) }}
  nodeSelector:
    {{- include "dockercoins.stringMap" . | nindent 4 }}
  {{- end }}
  {{- with ($c.tolerations | default $v.tolerations) }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with ($c.affinity | default $v.affinity) }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with ($c.topologySpreadConstraints | default $v.topologySpreadConstraints) }}
  topologySpreadConstraints:
    {{- $selector := dict "matchLabels" (fromYaml (include "dockercoins.selectorLabels" $)) }}
    {{- range . }}
    - {{- toYaml (ternary . (merge (dict "labelSelector" $selector) .) (hasKey . "labelSelector")) | nindent 6 }}
    {{- end }}
  {{- end }}
  {{- with (include "dockercoins.serviceAccountName" .root) }}
  serviceAccountName: {{ . }}
  {{- end }}
  containers:
    {{- if and (eq $v.image.pullPolicy "Always") (hasPrefix "localhost/" (include "dockercoins.image" .)) }}
    {{- fail (printf "image.pullPolicy Always with %s: the kubelet would pull it from https://localhost (ErrImagePull). Images loaded into the cluster (kind load, k3d image import) need IfNotPresent; Always needs a registry (image.registry)" (include "dockercoins.image" .)) }}
    {{- end }}
    - name: {{ .component }}
      image: {{ include "dockercoins.image" . }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      env:
        {{- include "dockercoins.env" . | trim | nindent 8 }}
      ports:
        - name: http
          containerPort: 80
          protocol: TCP
      {{- /* Timings from probes.*: by default three readiness misses (15 s), so a Redis slow for a few seconds does not take the worker and the web UI out of their Services. */}}
      readinessProbe:
        {{- include "dockercoins.probe" (list $v "readiness" "/readyz") | nindent 8 }}
      livenessProbe:
        {{- include "dockercoins.probe" (list $v "liveness" "/healthz") | nindent 8 }}
      {{- if dig "startup" "enabled" false ($v.probes | default dict) }}
      startupProbe:
        {{- include "dockercoins.probe" (list $v "startup" "/healthz") | nindent 8 }}
      {{- end }}
      {{- with $c.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (include "dockercoins.securityContext" (list $v "securityContext") | fromYaml) }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/*
A security context from values (podSecurityContext, securityContext, or
redis's), as YAML. A key missing from the values (a release installed from an
older chart and upgraded with --reuse-values) gives the chart's defaults,
those of the values.yaml; {} gives none. Call with (list $values "podSecurityContext")
or (list $values.redis "securityContext" "redis").
*/}}
{{- define "dockercoins.securityContext" -}}
{{- $values := index . 0 -}}
{{- $key := index . 1 -}}
{{- $restricted := dict "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true "privileged" false "capabilities" (dict "drop" (list "ALL")) -}}
{{- $defaults := dict
  "podSecurityContext" (dict "runAsNonRoot" true "runAsUser" 65532 "runAsGroup" 65532 "seccompProfile" (dict "type" "RuntimeDefault") "sysctls" (list (dict "name" "net.ipv4.ip_unprivileged_port_start" "value" "0")))
  "securityContext" $restricted
  "redisPodSecurityContext" (dict "runAsNonRoot" true "runAsUser" 999 "runAsGroup" 999 "fsGroup" 999 "seccompProfile" (dict "type" "RuntimeDefault"))
  "redisSecurityContext" $restricted -}}
{{- $which := ternary (printf "redis%s" (title $key)) $key (eq (len .) 3) -}}
{{- if hasKey $values $key -}}
{{- toYaml (index $values $key | default dict) -}}
{{- else -}}
{{- toYaml (index $defaults $which) -}}
{{- end -}}
{{- end -}}

{{/*
One probe of the four services: httpGet on the port named http, with the
timings of probes.<which> (a release of an older chart, upgraded with
--reuse-values, has no probes key: these defaults). Call with (list $values "readiness" "/readyz").
*/}}
{{- define "dockercoins.probe" -}}
{{- $defaults := dict
  "readiness" (dict "periodSeconds" 5 "timeoutSeconds" 2 "failureThreshold" 3)
  "liveness" (dict "periodSeconds" 10 "timeoutSeconds" 2 "failureThreshold" 3)
  "startup" (dict "periodSeconds" 2 "timeoutSeconds" 2 "failureThreshold" 30) -}}
{{- $which := index . 1 -}}
{{- $timings := dig $which (index $defaults $which) ((index . 0).probes | default dict) -}}
{{- $probe := dict "httpGet" (dict "path" (index . 2) "port" "http") -}}
{{- range $key, $value := omit $timings "enabled" }}
{{- $_ := set $probe $key (int64 $value) }}
{{- end }}
{{- toYaml $probe -}}
{{- end -}}

{{/* "true" when the component has an HorizontalPodAutoscaler (its Deployment then has no replicas). */}}
{{- define "dockercoins.autoscaled" -}}
{{- $c := index .root.Values .component -}}
{{- if and (dig "autoscaling" "enabled" false $c) (not (and (eq .component "rng") (eq .root.Values.rng.kind "DaemonSet"))) -}}
true
{{- end -}}
{{- end -}}

{{/* The pods' ServiceAccount: serviceAccount.name, or the chart's own when serviceAccount.create; empty: the namespace's default. */}}
{{- define "dockercoins.serviceAccountName" -}}
{{- $sa := .Values.serviceAccount | default dict -}}
{{- if $sa.create -}}
{{- $sa.name | default (include "dockercoins.name" (dict "root" . "component" "dockercoins")) -}}
{{- else -}}
{{- $sa.name | default "" -}}
{{- end -}}
{{- end -}}

{{/* A Deployment of one of our four services. */}}
{{- define "dockercoins.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  {{- include "dockercoins.metadata" . | nindent 2 }}
spec:
  {{- /* Left out unless set: then `kubectl scale` (or an autoscaler) owns it, and helm upgrade neither resets it (Helm 3) nor conflicts with it (Helm 4). */}}
  {{- $replicas := (index .root.Values .component).replicas }}
  {{- if and (not (kindIs "invalid" $replicas)) (not (include "dockercoins.autoscaled" .)) }}
  replicas: {{ int64 $replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "dockercoins.selectorLabels" . | nindent 6 }}
  template:
    {{- include "dockercoins.podTemplate" . | nindent 4 }}
{{- end -}}

{{/*
The ClusterIP Service on port 80 in front of rng or hasher. targetPort is the
number 80, not the name: pods made by `kubectl create deployment` (the
DaemonSet lesson's) have no named port and are reached all the same.
*/}}
{{- define "dockercoins.service" -}}
apiVersion: v1
kind: Service
metadata:
  {{- include "dockercoins.metadata" . | nindent 2 }}
spec:
  type: ClusterIP
  selector:
    {{- include "dockercoins.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: 80
      targetPort: 80
      protocol: TCP
{{- end -}}

{{- /* Bytes in a Kubernetes memory quantity (256Mi, 1Gi, 1G, 1000000). */ -}}
{{- define "dockercoins.quantityBytes" -}}
{{- $q := toString . -}}
{{- $units := dict "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $q -}}
{{- $unit := trimPrefix $number $q -}}
{{- printf "%.0f" (mulf ($number | float64) (get $units $unit | default 1.0)) -}}
{{- end -}}
{{- /*
Redis's maxmemory. Its RSS is about 1.2 times its data and a rewrite of the
append-only file forks it, so the data may take at most half the memory
limit: redis.maxmemory empty gives half the limit (512mb under 1Gi); a larger
redis.maxmemory is refused, naming both keys (the kernel would kill Redis,
which would then crash-loop replaying its append-only file). No memory limit
and no maxmemory: no --maxmemory.
*/ -}}
{{- define "dockercoins.redisMaxmemory" -}}
{{- $limit := dig "limits" "memory" "" (.resources | default dict) -}}
{{- $set := .maxmemory | default "" -}}
{{- $units := dict "b" 1.0 "kb" 1024.0 "mb" 1048576.0 "gb" 1073741824.0 -}}
{{- if $limit -}}
{{- $half := divf (include "dockercoins.quantityBytes" $limit | float64) 2.0 | floor -}}
{{- if $set -}}
{{- $number := regexFind "^[0-9]+" $set -}}
{{- $bytes := mulf ($number | float64) (get $units (trimPrefix $number $set)) -}}
{{- if gt $bytes $half -}}
{{- fail (printf "redis.maxmemory (%s) must be at most half of redis.resources.limits.memory (%s): Redis's memory is about 1.2 times its data and an append-only file rewrite forks it, so the kernel would kill it. Raise the limit with it, or leave redis.maxmemory empty (half the limit)" $set $limit) -}}
{{- end -}}
{{- $set -}}
{{- else if eq (mod (int64 $half) 1073741824) 0 -}}
{{- printf "%dgb" (div (int64 $half) 1073741824) -}}
{{- else if eq (mod (int64 $half) 1048576) 0 -}}
{{- printf "%dmb" (div (int64 $half) 1048576) -}}
{{- else -}}
{{- printf "%d" (int64 $half) -}}
{{- end -}}
{{- else -}}
{{- $set -}}
{{- end -}}
{{- end -}}
