{{/*
Object and Service names. Unprefixed by default (rng, hasher, redis, worker,
webui), so that the worker's defaults and the workshop's commands work
whatever the release is called; prefixNames: true gives <release>-<component>.
Call with (dict "root" $ "component" "rng").
*/}}
{{- define "dockercoins.name" -}}
{{- if .root.Values.prefixNames -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
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
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* What selects every pod of this release (the NetworkPolicy's "inside the app"). */}}
{{- define "dockercoins.appSelector" -}}
app.kubernetes.io/part-of: dockercoins
{{- if .Values.prefixNames }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- end -}}

{{/* One of our images: <registry>/<component>:<tag>. */}}
{{- define "dockercoins.image" -}}
{{- printf "%s/%s:%s" (.root.Values.image.registry | trimSuffix "/") .component (.root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{/* The environment each of our services gets besides PORT. */}}
{{- define "dockercoins.env" -}}
{{- $v := .root.Values -}}
{{- $turbo := $v.delays.turbo -}}
{{- if eq .component "rng" }}
- name: RNG_DELAY
  value: {{ ternary "0" $v.delays.rng $turbo | quote }}
- name: RNG_CONCURRENCY
  value: {{ ternary 0 $v.rng.concurrency $turbo | toString | quote }}
{{- else if eq .component "hasher" }}
- name: HASHER_DELAY
  value: {{ ternary "0" $v.delays.hasher $turbo | quote }}
{{- else if eq .component "worker" }}
- name: RNG_URL
  value: {{ printf "http://%s" (include "dockercoins.name" (dict "root" .root "component" "rng")) | quote }}
- name: HASHER_URL
  value: {{ printf "http://%s" (include "dockercoins.name" (dict "root" .root "component" "hasher")) | quote }}
- name: REDIS_URL
  value: {{ printf "redis://%s:6379" (include "dockercoins.name" (dict "root" .root "component" "redis")) | quote }}
- name: WORKER_SLEEP
  value: {{ ternary "0" $v.delays.worker $turbo | quote }}
- name: WORKER_CONCURRENCY
  value: {{ ternary 32 $v.worker.concurrency $turbo | toString | quote }}
{{- else if eq .component "webui" }}
- name: REDIS_URL
  value: {{ printf "redis://%s:6379" (include "dockercoins.name" (dict "root" .root "component" "redis")) | quote }}
{{- end }}
{{- if ne $v.logFormat "text" }}
- name: LOG_FORMAT
  value: {{ $v.logFormat | quote }}
{{- end }}
{{- if and $turbo (ne .component "worker") (not (hasKey (index $v .component).env "RUST_LOG")) }}
- name: RUST_LOG
  value: "info,access=warn"
{{- end }}
{{- range $name, $value := (index $v .component).env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/*
The pod template of rng, hasher, worker and webui: the images' user
(65532:65532, the images are FROM scratch), a read-only root, no capability,
no privilege escalation, the runtime's seccomp profile; readiness on /readyz,
liveness on /healthz (neither waits in rng's line); Prometheus annotations.
The services listen on 8080 in the pod (PORT): an unprivileged port works on
every container runtime, and the Services still answer on port 80.
*/}}
{{- define "dockercoins.podTemplate" -}}
metadata:
  labels:
    {{- include "dockercoins.labels" . | nindent 4 }}
  annotations:
    prometheus.io/scrape: "true"
    prometheus.io/port: "8080"
    prometheus.io/path: /metrics
spec:
  automountServiceAccountToken: false
  # No RNG_PORT=tcp://... and such from the Services: only the env below.
  enableServiceLinks: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: {{ .component }}
      image: {{ include "dockercoins.image" . }}
      imagePullPolicy: {{ .root.Values.image.pullPolicy }}
      env:
        - name: PORT
          value: "8080"
        {{- include "dockercoins.env" . | trim | nindent 8 }}
      ports:
        - name: http
          containerPort: 8080
          protocol: TCP
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: 5
        timeoutSeconds: 2
        failureThreshold: 2
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 10
        timeoutSeconds: 2
        failureThreshold: 3
      resources:
        {{- toYaml (index .root.Values .component).resources | nindent 8 }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        privileged: false
        capabilities:
          drop: [ALL]
{{- end -}}

{{/* A Deployment of one of our four services. */}}
{{- define "dockercoins.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "dockercoins.name" . }}
  labels:
    {{- include "dockercoins.labels" . | nindent 4 }}
spec:
  replicas: {{ (index .root.Values .component).replicas }}
  selector:
    matchLabels:
      {{- include "dockercoins.selectorLabels" . | nindent 6 }}
  template:
    {{- include "dockercoins.podTemplate" . | nindent 4 }}
{{- end -}}

{{/* The ClusterIP Service on port 80 in front of rng or hasher. */}}
{{- define "dockercoins.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "dockercoins.name" . }}
  labels:
    {{- include "dockercoins.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "dockercoins.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: 80
      targetPort: http
      protocol: TCP
{{- end -}}
