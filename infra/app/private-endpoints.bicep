// One private endpoint per entry, in the network's endpoint subnet, each with its DNS zone group:
// the group registers the endpoint's address in the service's privatelink zone (network.bicep),
// so the service's usual host name resolves to it from inside the network.
param location string
param tags object
param namePrefix string
param subnetId string
@description('[{ name, id, group, zone }]: a short name, the resource id, its private-link group id, its privatelink zone.')
param endpoints array

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = [for e in endpoints: {
  name: '${namePrefix}${e.name}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: '${namePrefix}${e.name}'
        properties: {
          privateLinkServiceId: e.id
          groupIds: [
            e.group
          ]
        }
      }
    ]
  }
}]

resource zoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (e, i) in endpoints: {
  parent: endpoint[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: replace(e.zone, '.', '-')
        properties: {
          privateDnsZoneId: resourceId('Microsoft.Network/privateDnsZones', e.zone)
        }
      }
    ]
  }
}]
