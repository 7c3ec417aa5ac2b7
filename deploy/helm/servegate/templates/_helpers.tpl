{{/* Names: the release's full name, truncated so that "<fullname>-triton-<pool>" fits 63. */}}
{{- define "servegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 30 | trimSuffix "-" -}}
{{- end -}}

{{- define "servegate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "servegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "servegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "servegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "servegate.labels" -}}
helm.sh/chart: {{ include "servegate.chart" . }}
{{ include "servegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: servegate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "servegate.gateway.selectorLabels" -}}
{{ include "servegate.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* Selector labels of one pool's Triton pods; call with (list $ "<pool>"). */}}
{{- define "servegate.pool.selectorLabels" -}}
{{- $root := index . 0 -}}
{{ include "servegate.selectorLabels" $root }}
app.kubernetes.io/component: triton
servegate.io/pool: {{ index . 1 }}
{{- end -}}

{{- define "servegate.serviceAccountName" -}}
{{- default (include "servegate.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The Deployment and Service of a pool; call with (list $ "<pool>"). */}}
{{- define "servegate.pool.fullname" -}}
{{- printf "%s-triton-%s" (include "servegate.fullname" (index . 0)) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "servegate.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* An image reference from {repository, tag, digest} (+ optional variant suffix). */}}
{{- define "servegate.imageRef" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else if .variant -}}
{{- printf "%s:%s-%s" .repository (toString .tag) .variant -}}
{{- else -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- end -}}
{{- end -}}

{{/*
Deep merge of two maps, as JSON: the second wins for every key it has, even when its value
is 0, false or empty (sprig's merge functions treat those as unset); null removes the key.
*/}}
{{- define "servegate.deepMerge" -}}
{{- $out := deepCopy (index . 0) -}}
{{- range $k, $v := (index . 1) -}}
{{- $cur := get $out $k -}}
{{- if kindIs "invalid" $v -}}
{{- $_ := unset $out $k -}}
{{- else if and (kindIs "map" $v) (kindIs "map" $cur) -}}
{{- $_ := set $out $k (include "servegate.deepMerge" (list $cur $v) | fromJson) -}}
{{- else -}}
{{- $_ := set $out $k $v -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Every pool over poolDefaults, as JSON {name: settings}. */}}
{{- define "servegate.pools" -}}
{{- $out := dict -}}
{{- range $name, $pool := .Values.pools -}}
{{- $pool = default (dict) $pool -}}
{{- $merged := include "servegate.deepMerge" (list $.Values.poolDefaults $pool) | fromJson -}}
{{- /* a pool's autoscaling targets replace the defaults' (signals are opt-in) */ -}}
{{- if and (kindIs "map" $pool.autoscaling) (hasKey (default (dict) $pool.autoscaling) "targets") -}}
{{- $_ := set $merged.autoscaling "targets" $pool.autoscaling.targets -}}
{{- end -}}
{{- $_ := set $out $name $merged -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
Restricted Pod Security for one container (not settable from values): non-root, read-only
root filesystem, no privilege escalation, no capabilities, the runtime's seccomp profile.
*/}}
{{- define "servegate.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod-level security context from {runAsUser, runAsGroup, fsGroup}. */}}
{{- define "servegate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .runAsUser }}
runAsGroup: {{ int .runAsGroup }}
fsGroup: {{ int .fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The rclone source for a model repository URI: s3://, gs://, az:// or verbatim. */}}
{{- define "servegate.rcloneSource" -}}
{{- $uri := . -}}
{{- if hasPrefix "s3://" $uri -}}
{{- printf ":s3:%s" (trimPrefix "s3://" $uri) -}}
{{- else if hasPrefix "gs://" $uri -}}
{{- printf ":gcs:%s" (trimPrefix "gs://" $uri) -}}
{{- else if hasPrefix "az://" $uri -}}
{{- printf ":azureblob:%s" (trimPrefix "az://" $uri) -}}
{{- else -}}
{{- $uri -}}
{{- end -}}
{{- end -}}

{{/* The servegate config (servegate.yaml) rendered from values. */}}
{{- define "servegate.config" -}}
{{- $pools := include "servegate.pools" . | fromJson -}}
{{- $cfgPools := dict -}}
{{- $scalePools := dict -}}
{{- range $name, $p := $pools -}}
{{- $svc := include "servegate.pool.fullname" (list $ $name) -}}
{{- $discovery := dict "type" "kubernetes" "service" $svc "namespace" $.Release.Namespace "http_port_name" "http" "grpc_port_name" "grpc" -}}
{{- $entry := dict "discovery" $discovery -}}
{{- with $p.health }}{{ $_ := set $entry "health" . }}{{ end -}}
{{- with $p.timeouts }}{{ $_ := set $entry "timeouts" . }}{{ end -}}
{{- with $p.cold_start }}{{ $_ := set $entry "cold_start" . }}{{ end -}}
{{- with $p.shedding }}{{ $_ := set $entry "shedding" . }}{{ end -}}
{{- $_ := set $entry "cost" (include "servegate.pool.cost" $p | fromJson) -}}
{{- with $p.fallback_pool }}
{{- if not (hasKey $pools .) }}
{{- fail (printf "pools.%s.fallback_pool: unknown pool %q (pools: %s)" $name . (keys $pools | sortAlpha | join ", ")) }}
{{- end }}
{{- $_ := set $entry "fallback_pool" . }}
{{- end -}}
{{- with $p.fallback_spill_at }}{{ $_ := set $entry "fallback_spill_at" . }}{{ end -}}
{{- $_ := set $cfgPools $name $entry -}}
{{- $as := deepCopy (default (dict) $p.autoscaling) -}}
{{- /* the Deployment the kubernetes actuator (scaling.mode=direct) scales */ -}}
{{- $_ := set $as "kubernetes" (dict "deployment" $svc "namespace" $.Release.Namespace) -}}
{{- $_ := set $scalePools $name $as -}}
{{- end -}}
{{- range $model, $route := .Values.models -}}
{{- if not (hasKey $pools $route.pool) -}}
{{- fail (printf "models.%s.pool: unknown pool %q (pools: %s)" $model $route.pool (keys $pools | sortAlpha | join ", ")) -}}
{{- end -}}
{{- range $ver, $vroute := (default (dict) $route.versions) -}}
{{- if not (hasKey $pools $vroute.pool) -}}
{{- fail (printf "models.%s.versions.%s.pool: unknown pool %q (pools: %s)" $model $ver $vroute.pool (keys $pools | sortAlpha | join ", ")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* the sidecar scrapes its own gateway (the Redis URL is a secret: it never goes here) */ -}}
{{- $signals := deepCopy .Values.autoscaling.signals -}}
{{- if not (hasKey $signals "gateways") -}}
{{- $_ := set $signals "gateways" (list (printf "http://127.0.0.1:%d" (int .Values.gateway.httpPort))) -}}
{{- end -}}
{{- $cfg := dict "pools" $cfgPools "models" .Values.models -}}
{{- with .Values.limits }}{{ $_ := set $cfg "limits" . }}{{ end -}}
{{- if .Values.auth.enabled }}{{ $_ := set $cfg "auth" (dict "header" .Values.auth.header) }}{{ end -}}
{{- with .Values.tenants }}{{ $_ := set $cfg "tenants" . }}{{ end -}}
{{- with .Values.priorities }}{{ $_ := set $cfg "priorities" . }}{{ end -}}
{{- $_ := set $cfg "autoscaling" (dict "signals" $signals "pools" $scalePools) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Environment shared by the gateway and the autoscaler: pod identity, Redis URL. */}}
{{- define "servegate.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef: {fieldPath: metadata.namespace}
{{- if .Values.redis.enabled }}
- name: SERVEGATE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "redis.existingSecret is required when redis.enabled" .Values.redis.existingSecret }}
      key: {{ .Values.redis.secretKey }}
{{- end }}
{{- end -}}

{{/* The sidecar's --actuator for the scaling mode. */}}
{{- define "servegate.actuator" -}}
{{- $m := .Values.scaling.mode -}}
{{- if eq $m "direct" }}kubernetes{{ else }}{{ $m }}{{ end -}}
{{- end -}}

{{/*
servegate config pools.<pool>.cost from a merged pool: prices and capacity type from its
`cost`, GPUs per replica from `gpu` (a MIG profile is its fraction of a GPU) unless
cost.gpus_per_replica says (time-sliced GPUs; a CPU-only pool, gpu.count 0, counts 1 per replica).
*/}}
{{- define "servegate.pool.cost" -}}
{{- $c := deepCopy (default (dict) .cost) -}}
{{- if not (hasKey $c "gpus_per_replica") -}}
{{- $count := int .gpu.count -}}
{{- if eq $count 0 -}}
{{- $_ := set $c "gpus_per_replica" 1 -}}
{{- else if or (eq .gpu.resource "nvidia.com/gpu") (regexMatch "^nvidia\\.com/mig-[1-7]g\\.[0-9]+gb$" .gpu.resource) -}}
{{- $_ := set $c "gpu_resource" .gpu.resource -}}
{{- $_ := set $c "gpus_per_resource" $count -}}
{{- else -}}
{{- $_ := set $c "gpus_per_replica" $count -}}
{{- end -}}
{{- end -}}
{{- toJson $c -}}
{{- end -}}

{{/* Node placement for a pool's capacity type (spot or on_demand), under the pool's own. */}}
{{- define "servegate.pool.placement" -}}
{{- $root := index . 0 -}}
{{- $p := index . 1 -}}
{{- $capacity := (default (dict) $p.cost).capacity | default "on_demand" -}}
{{- $place := deepCopy (default (dict) (index (default (dict) $root.Values.capacityPlacement) $capacity)) -}}
{{- $out := dict -}}
{{- $sel := merge (deepCopy (default (dict) $p.nodeSelector)) (default (dict) $place.nodeSelector) -}}
{{- if $sel }}{{ $_ := set $out "nodeSelector" $sel }}{{ end -}}
{{- $tol := concat (default (list) $p.tolerations) (default (list) $place.tolerations) -}}
{{- if $tol }}{{ $_ := set $out "tolerations" $tol }}{{ end -}}
{{- $aff := $p.affinity | default $place.affinity -}}
{{- if $aff }}{{ $_ := set $out "affinity" $aff }}{{ end -}}
{{- toJson $out -}}
{{- end -}}
