{{/*
Names, labels, and the plan of the cluster: every process of the topology and every link of
the Toxiproxy mesh, computed here the way chaos/backends and chaos/mesh.py compute them
(tests/charts/test_chart.py checks that both agree).
*/}}

{{- define "gameday.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gameday.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gameday.labels" -}}
{{ include "gameday.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "gameday.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .Values.image.registry) $repo -}}
{{- end -}}
{{- printf "%s:%s" $repo .Values.image.tag -}}
{{- end -}}

{{/* The zone label value of AZ number $i (0-based): placement.zones[i], else the AZ's name. */}}
{{- define "gameday.zoneOf" -}}
{{- $root := index . 0 -}}
{{- $i := index . 1 -}}
{{- $zones := $root.Values.placement.zones | default list -}}
{{- if lt $i (len $zones) -}}
{{- index $zones $i -}}
{{- else -}}
{{- printf "az-%s" (substr $i (add1 $i | int) "abcdefghijklmnopqrstuvwxyz") -}}
{{- end -}}
{{- end -}}

{{/*
The processes, as JSON: {"processes": [{id, role, az, zone, rack, rackValue, port, admin}, ...]}.
Storage nodes are sn-<az letter><n>, numbered within their AZ across its racks (rack 1 first);
routers rt-<letter>, MemDS md-<letter>; gac in the first AZ. Same names as cluster/topology.py.
*/}}
{{- define "gameday.processes" -}}
{{- $t := .Values.topology -}}
{{- $procs := list -}}
{{- range $a := until (int $t.azs) -}}
{{- $letter := substr $a (add1 $a | int) "abcdefghijklmnopqrstuvwxyz" -}}
{{- $az := printf "az-%s" $letter -}}
{{- $zone := include "gameday.zoneOf" (list $ $a) -}}
{{- $n := 0 -}}
{{- range $r := until (int $t.racksPerAz) -}}
{{- range $k := until (int $t.nodesPerRack) -}}
{{- $n = add1 $n -}}
{{- $rack := printf "%s/r%d" $az (add1 $r) -}}
{{- $procs = append $procs (dict "id" (printf "sn-%s%d" $letter $n) "role" "storage" "az" $az "zone" $zone "rack" $rack "rackValue" (printf "%s-r%d" $az (add1 $r)) "port" 7100 "admin" 7180) -}}
{{- end -}}
{{- end -}}
{{- $procs = append $procs (dict "id" (printf "md-%s" $letter) "role" "memds" "az" $az "zone" $zone "port" 7300 "admin" 7300) -}}
{{- $procs = append $procs (dict "id" (printf "rt-%s" $letter) "role" "router" "az" $az "zone" $zone "port" 8000 "admin" 8000) -}}
{{- end -}}
{{- $procs = append $procs (dict "id" "gac" "role" "gac" "az" "az-a" "zone" (include "gameday.zoneOf" (list $ 0)) "port" 7400 "admin" 7400) -}}
{{- dict "processes" $procs | toJson -}}
{{- end -}}

{{/*
The links, as JSON: {"links": [{name, src, dst, port, upstream}, ...]}: one per directed pair
of processes that talk, in chaos/mesh.py's LINKED_ROLES order, then by source and destination id
(sorted as strings), numbered from mesh.firstProxyPort.
*/}}
{{- define "gameday.links" -}}
{{- $full := include "gameday.fullname" . -}}
{{- $procs := (include "gameday.processes" . | fromJson).processes -}}
{{- $ids := dict "storage" list "router" list "memds" list "gac" list -}}
{{- $portOf := dict -}}
{{- range $p := $procs -}}
{{- $_ := set $ids $p.role (append (get $ids $p.role) $p.id) -}}
{{- $_ := set $portOf $p.id $p.port -}}
{{- end -}}
{{- $pairs := list (list "storage" "storage") (list "router" "storage") (list "router" "memds") (list "router" "gac") (list "memds" "storage") (list "storage" "memds") -}}
{{- $port := int .Values.mesh.firstProxyPort -}}
{{- $links := list -}}
{{- range $pair := $pairs -}}
{{- range $src := sortAlpha (get $ids (index $pair 0)) -}}
{{- range $dst := sortAlpha (get $ids (index $pair 1)) -}}
{{- if ne $src $dst -}}
{{- $links = append $links (dict "name" (printf "%s>%s" $src $dst) "src" $src "dst" $dst "port" $port "upstream" (printf "%s-%s:%v" $full $dst (get $portOf $dst))) -}}
{{- $port = add1 $port -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if gt $port 65536 -}}
{{- fail (printf "mesh.firstProxyPort: %d links do not fit between %v and 65535" (len $links) $.Values.mesh.firstProxyPort) -}}
{{- end -}}
{{- dict "links" $links | toJson -}}
{{- end -}}

{{/* The secret access key: the value given, else the one this release already has, else new. */}}
{{- define "gameday.secretKey" -}}
{{- if .Values.credentials.secretAccessKey -}}
{{- .Values.credentials.secretAccessKey -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-credentials" (include "gameday.fullname" .)) -}}
{{- if and $existing $existing.data (hasKey $existing.data "secret-access-key") -}}
{{- index $existing.data "secret-access-key" | b64dec -}}
{{- else -}}
{{- randAlphaNum 40 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
cluster.json, what every process reads (cluster/config.py: ClusterConfig). Processes listen on
all of their pod's addresses and reach every peer through `dial`: the link's proxy in the mesh
(the Toxiproxy Service), or the peer's own Service without the mesh.
*/}}
{{- define "gameday.clusterConfig" -}}
{{- $root := index . 0 -}}
{{- $secret := index . 1 -}}
{{- $full := include "gameday.fullname" $root -}}
{{- $t := $root.Values.topology -}}
{{- $procs := (include "gameday.processes" $root | fromJson).processes -}}
{{- $links := (include "gameday.links" $root | fromJson).links -}}
{{- $processes := dict -}}
{{- range $p := $procs -}}
{{- $info := dict "id" $p.id "role" $p.role "az" $p.az "listen" (printf "0.0.0.0:%v" $p.port) "admin" (printf "0.0.0.0:%v" $p.admin) -}}
{{- if $p.rack -}}{{- $_ := set $info "rack" $p.rack -}}{{- end -}}
{{- $_ := set $processes $p.id $info -}}
{{- end -}}
{{- $dial := dict -}}
{{- range $l := $links -}}
{{- $to := $l.upstream -}}
{{- if $root.Values.mesh.enabled -}}
{{- $to = printf "%s-toxiproxy:%v" $full $l.port -}}
{{- end -}}
{{- $row := get $dial $l.src | default dict -}}
{{- $_ := set $row $l.dst $to -}}
{{- $_ := set $dial $l.src $row -}}
{{- end -}}
{{- $creds := dict $root.Values.credentials.accessKeyId $secret -}}
{{- dict "topology" (printf "%vx%vx%v" $t.azs $t.racksPerAz $t.nodesPerRack) "processes" $processes "credentials" $creds "dial" $dial "default_partitions" (int $t.partitions) "tick_ms" $root.Values.raft.tickMs "election_ticks" (int $root.Values.raft.electionTicks) | toPrettyJson -}}
{{- end -}}

{{/* requiredDuringScheduling node affinity for one process ($p from gameday.processes). */}}
{{- define "gameday.affinity" -}}
{{- $root := index . 0 -}}
{{- $p := index . 1 -}}
nodeAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    nodeSelectorTerms:
      - matchExpressions:
          - key: {{ $root.Values.placement.zoneLabel }}
            operator: In
            values: [{{ $p.zone | quote }}]
          {{- if and $p.rackValue $root.Values.placement.rackLabel }}
          - key: {{ $root.Values.placement.rackLabel }}
            operator: In
            values: [{{ $p.rackValue | quote }}]
          {{- end }}
{{- end -}}

{{/* Labels of one process's pods and Services. */}}
{{- define "gameday.processLabels" -}}
{{- $root := index . 0 -}}
{{- $p := index . 1 -}}
{{ include "gameday.selectorLabels" $root }}
app.kubernetes.io/component: {{ $p.role }}
gameday.io/process: {{ $p.id }}
gameday.io/az: {{ $p.az }}
{{- if $p.rackValue }}
gameday.io/rack: {{ $p.rackValue }}
{{- end }}
{{- end -}}
