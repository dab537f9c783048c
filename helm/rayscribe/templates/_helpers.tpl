{{/* Names and labels. */}}
{{- define "rayscribe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The RayService name; KubeRay derives <fullname>-serve-svc from it, so keep it short. */}}
{{- define "rayscribe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rayscribe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rayscribe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rayscribe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "rayscribe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rayscribe.serveSvc" -}}
{{ include "rayscribe.fullname" . }}-serve-svc
{{- end }}

{{- define "rayscribe.redisName" -}}
{{ include "rayscribe.fullname" . }}-redis
{{- end }}

{{/* Secret and key holding the in-cluster Redis password. */}}
{{- define "rayscribe.redisSecretName" -}}
{{- .Values.redis.auth.existingSecret | default (include "rayscribe.redisName" .) }}
{{- end }}

{{- define "rayscribe.redisSecretKey" -}}
{{- if .Values.redis.auth.existingSecret }}{{ .Values.redis.auth.existingSecretKey }}{{ else }}redis-password{{ end }}
{{- end }}

{{- define "rayscribe.redisHost" -}}
{{ include "rayscribe.redisName" . }}.{{ .Release.Namespace }}.svc
{{- end }}

{{- define "rayscribe.image" -}}
{{- $img := index .root.Values.image .kind -}}
{{ $img.repository }}:{{ $img.tag }}
{{- end }}

{{/*
Environment of every Ray container.  The app reads RAYSCRIBE_REDIS_URL (it overrides
ingress.store.url from ray_config.yaml).  The in-cluster Redis URL is composed by Kubernetes'
$(VAR) expansion, so the password stays in its Secret and out of the RayService.
*/}}
{{- define "rayscribe.rayEnv" -}}
{{- if .Values.redis.enabled }}
- name: RAYSCRIBE_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "rayscribe.redisSecretName" . }}
      key: {{ include "rayscribe.redisSecretKey" . }}
- name: RAYSCRIBE_REDIS_URL
  value: "redis://:$(RAYSCRIBE_REDIS_PASSWORD)@{{ include "rayscribe.redisHost" . }}:6379/{{ .Values.redis.db }}"
{{- else }}
- name: RAYSCRIBE_REDIS_URL
  valueFrom:
    secretKeyRef:
      {{- if .Values.redis.external.existingSecret }}
      name: {{ .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.existingSecretKey }}
      {{- else }}
      name: {{ include "rayscribe.fullname" . }}-redis-url
      key: redis-url
      {{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Container ports every Ray node exposes (the head adds its own). */}}
{{- define "rayscribe.rayPorts" -}}
- name: serve
  containerPort: 8000
  protocol: TCP
- name: metrics
  containerPort: {{ .Values.metrics.port }}
  protocol: TCP
{{- end }}

{{/*
Pod template of a Ray worker group.  Args: root (the chart context), name (group name),
group (its values), image ("cpu" or "cuda"), gpus (nvidia.com/gpu per pod).
*/}}
{{- define "rayscribe.workerTemplate" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "rayscribe.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: ray-worker
    rayscribe.io/ray-node: "true"
    rayscribe.io/group: {{ .name }}
spec:
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with .group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: ray-worker
      image: {{ include "rayscribe.image" (dict "root" $root "kind" .image) }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      env:
        {{- include "rayscribe.rayEnv" $root | trim | nindent 8 }}
      ports:
        {{- include "rayscribe.rayPorts" $root | nindent 8 }}
      {{- $res := deepCopy .group.resources }}
      {{- if gt (int .gpus) 0 }}
      {{- $_ := set $res "requests" (merge (dict "nvidia.com/gpu" (int .gpus)) ($res.requests | default dict)) }}
      {{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" (int .gpus)) ($res.limits | default dict)) }}
      {{- end }}
      resources:
        {{- toYaml $res | nindent 8 }}
      lifecycle:
        preStop:
          exec:
            command: ["/bin/sh", "-c", "ray stop"]
{{- end }}

{{/*
serveConfigV2: ray_config.yaml (files/ray_config.yaml, a symlink to the repository's one file)
with the `serve` values merged over it:
  1. serve.config over the top level (proxy_location, http_options, ...);
  2. serve.applications.<app> (less `deployments`) over the application of that name;
  3. serve.applications.<app>.deployments.<name> over the deployment of that name.
Maps merge, scalars and lists replace (mergeOverwrite).  Names not in the file fail the render.
*/}}
{{- define "rayscribe.serveConfig" -}}
{{- $base := .Files.Get "files/ray_config.yaml" | fromYaml -}}
{{- if or (not $base) (hasKey $base "Error") (not $base.applications) -}}
{{- fail "files/ray_config.yaml (a link to the repository's ray_config.yaml) is missing or not a Serve config" -}}
{{- end -}}
{{- $cfg := mergeOverwrite (deepCopy $base) (deepCopy .Values.serve.config) -}}
{{- $appOverrides := .Values.serve.applications | default dict -}}
{{- $appNames := list -}}
{{- $apps := list -}}
{{- range $app := $base.applications -}}
{{- $appNames = append $appNames $app.name -}}
{{- $o := deepCopy (get $appOverrides $app.name | default dict) -}}
{{- $depOverrides := get $o "deployments" | default dict -}}
{{- $a := mergeOverwrite (deepCopy $app) (omit $o "deployments") -}}
{{- $depNames := list -}}
{{- $deps := list -}}
{{- range $d := $app.deployments -}}
{{- $depNames = append $depNames $d.name -}}
{{- $deps = append $deps (mergeOverwrite (deepCopy $d) (get $depOverrides $d.name | default dict)) -}}
{{- end -}}
{{- range $n, $_ := $depOverrides -}}
{{- if not (has $n $depNames) -}}
{{- fail (printf "serve.applications.%s.deployments.%s: ray_config.yaml has no such deployment (it has %s)" $app.name $n (join ", " $depNames)) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $a "deployments" $deps -}}
{{- $apps = append $apps $a -}}
{{- end -}}
{{- range $n, $_ := $appOverrides -}}
{{- if not (has $n $appNames) -}}
{{- fail (printf "serve.applications.%s: ray_config.yaml has no such application (it has %s)" $n (join ", " $appNames)) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "applications" $apps -}}
{{- toYaml $cfg -}}
{{- end }}

{{/* Fail early when GPU workers and GPU replicas disagree: either would never schedule. */}}
{{- define "rayscribe.checkGpu" -}}
{{- $cfg := include "rayscribe.serveConfig" . | fromYaml -}}
{{- $wantGpu := false -}}
{{- range $app := $cfg.applications -}}
{{- range $d := $app.deployments -}}
{{- if gt (float64 (dig "ray_actor_options" "num_gpus" 0 $d)) 0.0 -}}
{{- $wantGpu = true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $hasGpu := gt (int .Values.asrWorkers.gpusPerPod) 0 -}}
{{- if and $wantGpu (not $hasGpu) -}}
{{- fail "a deployment asks for num_gpus but asrWorkers.gpusPerPod is 0 (examples/values-gpu.yaml)" -}}
{{- end -}}
{{- if and $hasGpu (not $wantGpu) -}}
{{- fail "asrWorkers.gpusPerPod > 0 but no deployment asks for num_gpus: set serve.applications.rayscribe.deployments.ASRModel.ray_actor_options.num_gpus (examples/values-gpu.yaml)" -}}
{{- end -}}
{{- end }}
