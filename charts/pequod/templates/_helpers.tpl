{{/*
The chart name, overridable.
*/}}
{{- define "pequod.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name every object is named after: fullnameOverride, else the release name when it
already contains the chart name, else <release>-<chart>. Cluster-scoped objects carry it too,
so two releases in one cluster need different full names.
*/}}
{{- define "pequod.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pequod.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "pequod.labels" -}}
helm.sh/chart: {{ include "pequod.chart" . }}
{{ include "pequod.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pequod
{{- end }}

{{/*
Labels that select the operator pods (never change them on upgrade: selectors are immutable).
*/}}
{{- define "pequod.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pequod.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "pequod.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pequod.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository@digest, else repository:tag (tag defaults to appVersion).
*/}}
{{- define "pequod.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
"true" when graphs are granted cluster-scoped kinds: clusterScopedKinds is set, or the
deprecated allowClusterScoped (every kind) is on; "" otherwise.
*/}}
{{- define "pequod.clusterScopedGranted" -}}
{{- if or .Values.allowClusterScoped (not (empty .Values.clusterScopedKinds)) }}true{{ end }}
{{- end }}

{{/*
The cluster-scoped kinds granted, for messages: "every kind" under allowClusterScoped or "*",
else the list.
*/}}
{{- define "pequod.clusterScopedKindsText" -}}
{{- if or .Values.allowClusterScoped (has "*" .Values.clusterScopedKinds) }}every cluster-scoped kind
{{- else }}{{ join ", " .Values.clusterScopedKinds }}
{{- end }}
{{- end }}

{{/*
"true" when permissions are bound cluster-wide (ClusterRoleBindings), "" when per namespace
(RoleBindings). rbac.clusterScoped decides when set; unset, cluster-wide unless
watchNamespaces is set (and no cluster-scoped kinds are granted by clusterScopedKinds or
allowClusterScoped: cluster-scoped objects, and objects in the Namespaces a graph creates,
need a cluster-wide binding).
*/}}
{{- define "pequod.rbac.clusterWide" -}}
{{- if kindIs "bool" .Values.rbac.clusterScoped }}
{{- if .Values.rbac.clusterScoped }}true{{ end }}
{{- else if or (empty .Values.watchNamespaces) (include "pequod.clusterScopedGranted" .) }}true
{{- end }}
{{- end }}

{{/*
Namespaces that receive an apply RoleBinding when bound per namespace: watchNamespaces and
allowNamespaces, without duplicates, as a JSON list.
*/}}
{{- define "pequod.rbac.applyNamespaces" -}}
{{- concat .Values.watchNamespaces .Values.allowNamespaces | uniq | toJson }}
{{- end }}

{{/*
The derived memory limit: operatorMemoryMiB + cue.instances × cue.memoryMiB, in Mi.
*/}}
{{- define "pequod.memoryLimit" -}}
{{- $cue := mul (int .Values.cue.instances) (int .Values.cue.memoryMiB) }}
{{- printf "%dMi" (add (int .Values.operatorMemoryMiB) $cue) }}
{{- end }}

{{/*
The container's resources: .Values.resources, with limits.memory derived when unset.
*/}}
{{- define "pequod.resources" -}}
{{- $resources := deepCopy (default dict .Values.resources) }}
{{- $limits := deepCopy (default dict (get $resources "limits")) }}
{{- if not (get $limits "memory") }}
{{- $_ := set $limits "memory" (include "pequod.memoryLimit" .) }}
{{- end }}
{{- $_ := set $resources "limits" $limits }}
{{- toYaml $resources }}
{{- end }}
