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
{{- /* Serve's proxy on every node paces WebSocket audio at ray_config.yaml's ingress limits
(deployments/proxy_guard.py; cluster/runtime.py proxy_env sets the same two variables) */}}
{{- $app := index (.Files.Get "files/ray_config.yaml" | fromYaml).applications 0 }}
{{- $limits := $app.args.ingress.limits | default dict }}
- name: RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH
  value: deployments.proxy_guard:middlewares
- name: RAYSCRIBE_PROXY_PACE
  value: {{ pick $limits "max_speed" "max_lead_s" | toJson | quote }}
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
API keys (values `auth`).  The file the app reads (ray_config.yaml ingress.auth.keys_file) is
/etc/rayscribe/api-keys: the chart mounts the Secret's key there, in the ingress workers only.
*/}}
{{- define "rayscribe.authKeysDir" -}}
/etc/rayscribe
{{- end }}

{{/* "true" when auth.mode is "off" (or YAML's bare off, which is false). */}}
{{- define "rayscribe.authOff" -}}
{{- if has (toString .Values.auth.mode) (list "off" "false") }}true{{ end }}
{{- end }}

{{/* Secret holding the key lines: existingSecret, else the chart's own from auth.keys, else "". */}}
{{- define "rayscribe.authSecretName" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecret }}
{{- else if .Values.auth.keys }}{{ include "rayscribe.fullname" . }}-api-keys
{{- end }}
{{- end }}

{{- define "rayscribe.authSecretKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}api-keys{{ end }}
{{- end }}

{{/* The chart's key file: "key_id sha256hex" lines from auth.keys. */}}
{{- define "rayscribe.authKeyLines" -}}
{{- range .Values.auth.keys }}{{ printf "%s %s\n" .id .sha256 }}{{ end }}
{{- end }}

{{/*
Fail the render on an auth setup that cannot work: both key sources, a hash listed twice, a
keys_file the mount does not provide, or auth on with no keys (every stream refused, 4401).
*/}}
{{- define "rayscribe.checkAuth" -}}
{{- $a := .Values.auth -}}
{{- if and $a.existingSecret $a.keys -}}
{{- fail "auth: set one of auth.existingSecret and auth.keys, not both" -}}
{{- end -}}
{{- $seen := list -}}
{{- range $k := $a.keys -}}
{{- if has $k.sha256 $seen -}}
{{- fail (printf "auth.keys: the hash of key %q is listed twice" $k.id) -}}
{{- end -}}
{{- $seen = append $seen $k.sha256 -}}
{{- end -}}
{{- $file := printf "%s/api-keys" (include "rayscribe.authKeysDir" .) -}}
{{- $cfg := include "rayscribe.serveConfig" . | fromYaml -}}
{{- range $app := $cfg.applications -}}
{{- $auth := dig "args" "ingress" "auth" dict $app -}}
{{- if ne (toString ($auth.mode | default "api_key")) "off" -}}
{{- if not (include "rayscribe.authSecretName" $) -}}
{{- fail (printf "auth: no API keys, so every stream would be refused (4401). Set auth.existingSecret to a Secret holding \"key_id sha256hex\" lines (kubectl -n %s create secret generic rayscribe-api-keys --from-file=api-keys=FILE; python -m deployments.auth new --id NAME makes a key), or auth.keys to [{id, sha256}], or auth.mode \"off\" on a trusted network only (chart README: API keys)" $.Release.Namespace) -}}
{{- end -}}
{{- if ne (toString $auth.keys_file) $file -}}
{{- fail (printf "application %s: ingress.auth.keys_file is %v but the chart mounts the keys at %s" $app.name $auth.keys_file $file) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
Pod template of a Ray worker group.  Args: root (the chart context), name (group name),
group (its values), image ("cpu" or "cuda"), gpus (nvidia.com/gpu per pod), apiKeys (mount the
API-key Secret: the group that advertises the `ingress` resource, where the Ingress replicas run).
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
  {{- $keys := and .apiKeys (include "rayscribe.authSecretName" $root) }}
  {{- if $keys }}
  volumes:
    # API keys; a whole-directory mount (no subPath), so kubelet updates the file in place
    - name: api-keys
      secret:
        secretName: {{ include "rayscribe.authSecretName" $root }}
        defaultMode: 0444
        items:
          - key: {{ include "rayscribe.authSecretKey" $root }}
            path: api-keys
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
      {{- if $keys }}
      volumeMounts:
        - name: api-keys
          mountPath: {{ include "rayscribe.authKeysDir" $root }}
          readOnly: true
      {{- end }}
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
with, where asrWorkers.gpusPerPod > 0, cluster/layers/gpu.yaml (files/layers/gpu.yaml) and then
the `serve` values merged over it:
  1. serve.config over the top level (proxy_location, http_options, ...);
  2. serve.applications.<app> (less `deployments`) over the application of that name;
  3. serve.applications.<app>.deployments.<name> over the deployment of that name.
auth.mode "off" adds args.ingress.auth.mode "off" to the rayscribe application's layer.  Maps merge, scalars and lists replace (mergeOverwrite).  Names not in the file fail the render.
*/}}
{{- define "rayscribe.serveConfig" -}}
{{- $base := .Files.Get "files/ray_config.yaml" | fromYaml -}}
{{- if or (not $base) (hasKey $base "Error") (not $base.applications) -}}
{{- fail "files/ray_config.yaml (a link to the repository's ray_config.yaml) is missing or not a Serve config" -}}
{{- end -}}
{{- /* GPU workers: cluster/layers/gpu.yaml (files/layers/gpu.yaml, a symlink) first, then the
values: the layer `rayscribe-cluster deploy --layer gpu` applies, not a copy of it */ -}}
{{- $gpu := dict -}}
{{- if gt (int .Values.asrWorkers.gpusPerPod) 0 -}}
{{- $gpu = .Files.Get "files/layers/gpu.yaml" | fromYaml -}}
{{- if or (not $gpu) (hasKey $gpu "Error") (not $gpu.applications) -}}
{{- fail "files/layers/gpu.yaml (a link to cluster/layers/gpu.yaml) is missing or not a layer" -}}
{{- end -}}
{{- end -}}
{{- $cfg := mergeOverwrite (deepCopy $base) (deepCopy ($gpu.config | default dict)) (deepCopy .Values.serve.config) -}}
{{- $appOverrides := mergeOverwrite (deepCopy ($gpu.applications | default dict)) (deepCopy (.Values.serve.applications | default dict)) -}}
{{- if hasKey (dig "rayscribe" "args" "ingress" "auth" dict $appOverrides) "mode" -}}
{{- fail "serve.applications.rayscribe.args.ingress.auth.mode: set auth.mode instead" -}}
{{- end -}}
{{- if include "rayscribe.authOff" . -}}
{{- $off := dict "rayscribe" (dict "args" (dict "ingress" (dict "auth" (dict "mode" "off")))) -}}
{{- $appOverrides = mergeOverwrite $appOverrides $off -}}
{{- end -}}
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
{{- $asrShare := 0.0 -}}
{{- range $app := $cfg.applications -}}
{{- range $d := $app.deployments -}}
{{- if gt (float64 (dig "ray_actor_options" "num_gpus" 0 $d)) 0.0 -}}
{{- $wantGpu = true -}}
{{- end -}}
{{- if eq $d.name "ASRModel" -}}
{{- $asrShare = float64 (dig "ray_actor_options" "num_gpus" 0 $d) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $hasGpu := gt (int .Values.asrWorkers.gpusPerPod) 0 -}}
{{- if and $wantGpu (not $hasGpu) -}}
{{- fail "a deployment asks for num_gpus but asrWorkers.gpusPerPod is 0 (examples/values-gpu.yaml)" -}}
{{- end -}}
{{- if and $hasGpu (not $wantGpu) -}}
{{- fail "asrWorkers.gpusPerPod > 0 but no deployment asks for num_gpus (cluster/layers/gpu.yaml sets ASRModel.ray_actor_options.num_gpus 0.5; the serve values set it back to 0)" -}}
{{- end -}}
{{- /* each asr slot admits a replica: the slots' GPU shares must fit the pod's GPUs, or the
replicas past them stay pending while Serve counts on them */ -}}
{{- $slotsGpu := mulf $asrShare (float64 .Values.asrWorkers.asrSlots) -}}
{{- if and $hasGpu (gt $slotsGpu (addf (float64 .Values.asrWorkers.gpusPerPod) 0.001)) -}}
{{- fail (printf "asrWorkers.asrSlots (%d) x ASRModel num_gpus (%g) needs %g GPUs per pod, gpusPerPod is %d" (int .Values.asrWorkers.asrSlots) $asrShare $slotsGpu (int .Values.asrWorkers.gpusPerPod)) -}}
{{- end -}}
{{- end }}
